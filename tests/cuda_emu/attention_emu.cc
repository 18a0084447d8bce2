/* attention_emu.cc — attention_cuda.cu built for the CUDA emulator (cuda_runtime.h). */
#include "attention_cuda.cu"
