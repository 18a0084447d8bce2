/* qgemm_emu.cc — qgemm_cuda.cu built for the CUDA emulator (cuda_runtime.h). */
#include "qgemm_cuda.cu"
