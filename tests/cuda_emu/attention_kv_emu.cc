/* attention_kv_emu.cc — attention_kv_cuda.cu built for the CUDA emulator (cuda_runtime.h). */
#include "attention_kv_cuda.cu"
