/* cuda_test.c — being written; fails until it lands. */
#include <stdio.h>
int main(void)
{
	puts("cuda_test: not written yet");
	return 1;
}
