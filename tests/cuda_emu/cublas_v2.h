/* cublas_v2.h — the CUDA emulator's stand-in for cuBLAS (see
 * cuda_runtime.h): the calls the backend makes, computed with OpenBLAS in
 * cuBLAS's column-major convention, with cuBLAS's argument checks. With
 * CUBLAS_TF32_TENSOR_OP_MATH the operands are rounded to TF32 (10 mantissa
 * bits) first, as the tensor cores read them; sums stay in fp32.
 * cublasGemmEx takes fp32 or bf16 A and B (bf16 widened exactly: a product
 * of two bf16 values is exact in fp32), fp32 C and CUBLAS_COMPUTE_32F, and
 * answers CUBLAS_STATUS_NOT_SUPPORTED for other types. */
#ifndef SC_CUDA_EMU_CUBLAS_H
#define SC_CUDA_EMU_CUBLAS_H

#include "cuda_runtime.h"

typedef enum {
	CUBLAS_STATUS_SUCCESS = 0,
	CUBLAS_STATUS_NOT_INITIALIZED = 1,
	CUBLAS_STATUS_ALLOC_FAILED = 3,
	CUBLAS_STATUS_INVALID_VALUE = 7,
	CUBLAS_STATUS_EXECUTION_FAILED = 13,
	CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;

/* library_types.h's and cuBLAS's values. */
typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;

typedef enum {
	CUBLAS_DEFAULT_MATH = 0,
	CUBLAS_TF32_TENSOR_OP_MATH = 3,
} cublasMath_t;

typedef struct sc_emu_cublas *cublasHandle_t;

const char *cublasGetStatusString(cublasStatus_t s);
cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode);
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			   int n, int k, const float *alpha, const float *a, int lda,
			   const float *b, int ldb, const float *beta, float *c, int ldc);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
					 cublasOperation_t tb, int m, int n, int k,
					 const float *alpha, const float *a, int lda,
					 long long stride_a, const float *b, int ldb,
					 long long stride_b, const float *beta, float *c, int ldc,
					 long long stride_c, int batch);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
			    int n, int k, const void *alpha, const void *a, cudaDataType a_type,
			    int lda, const void *b, cudaDataType b_type, int ldb, const void *beta,
			    void *c, cudaDataType c_type, int ldc, cublasComputeType_t compute,
			    cublasGemmAlgo_t algo);

#endif
