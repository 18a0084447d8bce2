/* adapter_test.c — being written; fails until it lands. */
#include <stdio.h>
int main(void)
{
	puts("adapter_test: not written yet");
	return 1;
}
