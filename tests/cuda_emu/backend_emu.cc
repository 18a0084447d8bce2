/* backend_emu.cc — backend_cuda.cu built for the CUDA emulator (cuda_runtime.h). */
#include "backend_cuda.cu"
