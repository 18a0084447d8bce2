/* ops_emu.cc — ops_cuda.cu built for the CUDA emulator (cuda_runtime.h). */
#include "ops_cuda.cu"
