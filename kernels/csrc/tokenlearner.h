/*
 * Fused TokenLearner forward (V1.1, text-conditioned) for CUDA: C ABI.
 *
 *   x [B, N, C], cond_bias [B, C] (optional), LayerNorm ln_weight/ln_bias [C],
 *   MLP w1 [H, C], b1 [H], w2 [S, H], b2 [S]   (nn.Linear layout: out x in)
 *   logits = MLP(LN(x) + cond_bias)  -> [B, S, N]
 *   a      = softmax over N (fp32)
 *   z      = a @ x                    -> [B, S, C]
 *
 * The maps a are never written: one pass over x with an online softmax. N is
 * cut into slices when B alone cannot fill the GPU; partial results go to a
 * workspace and a second small kernel combines them.
 *
 * Every tensor is dense row-major, device memory, and of one dtype (FP32 or
 * FP16; accumulation is always FP32). Plain C so that it can be called through
 * ctypes / CuPy without TensorRT, and from the TensorRT plugin.
 */
#ifndef COTOK_TOKENLEARNER_H
#define COTOK_TOKENLEARNER_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#if defined(_WIN32)
#define COTOK_API __declspec(dllexport)
#else
#define COTOK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every function below. */
enum CotokStatus
{
    COTOK_OK = 0,
    COTOK_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a size out of range, a workspace too small */
    COTOK_ERR_UNSUPPORTED = 2,      /* a size or dtype this kernel was not built for */
    COTOK_ERR_CUDA = 3              /* a CUDA runtime call or launch failed */
};

/* Element type of every tensor of one call. */
enum CotokDType
{
    COTOK_DTYPE_FLOAT32 = 0,
    COTOK_DTYPE_FLOAT16 = 1
};

/* Hidden width of the TokenLearner MLP this kernel is built for (V1.1: 64). */
#define COTOK_TOKENLEARNER_HIDDEN 64
/* Largest S (maps per call) and C (channels) supported. */
#define COTOK_TOKENLEARNER_MAX_S 16
#define COTOK_TOKENLEARNER_MAX_C 1024
/* Largest number of N slices per batch element. */
#define COTOK_TOKENLEARNER_MAX_SPLITS 128

/*
 * Slices of N per batch element that the forward uses when num_splits = 0,
 * for a GPU with sm_count multiprocessors: about two blocks per SM.
 */
COTOK_API int32_t cotok_tokenlearner_default_splits(int32_t B, int32_t N, int32_t sm_count);

/* Workspace bytes the forward needs for these sizes and this number of slices (0 if 1). */
COTOK_API size_t cotok_tokenlearner_workspace_size(int32_t B, int32_t S, int32_t C, int32_t num_splits);

/*
 * Upper bound of the workspace over every B <= max_B and every N, with the
 * default slicing on a GPU with sm_count multiprocessors (what a TensorRT
 * plugin reserves at build time, before the runtime shapes are known).
 */
COTOK_API size_t cotok_tokenlearner_workspace_bound(int32_t max_B, int32_t S, int32_t C, int32_t sm_count);

/*
 * z [B, S, C] = TokenLearner(x, cond_bias) on `stream`. Asynchronous.
 *
 * dtype: a CotokDType for x, cond_bias, every weight and z.
 * cond_bias: may be NULL (no conditioning).
 * H must be COTOK_TOKENLEARNER_HIDDEN; 1 <= S <= COTOK_TOKENLEARNER_MAX_S;
 * 1 <= C <= COTOK_TOKENLEARNER_MAX_C.
 * num_splits: slices of N per batch element; 0 picks cotok_tokenlearner_default_splits
 * for the current device. Values above 1 need `workspace` of at least
 * cotok_tokenlearner_workspace_size(B, S, C, num_splits) bytes (256-byte aligned).
 * eps: LayerNorm epsilon (the reference uses 1e-6).
 */
COTOK_API int32_t cotok_tokenlearner_forward(int32_t dtype, void const* x, void const* cond_bias,
    void const* ln_weight, void const* ln_bias, void const* w1, void const* b1, void const* w2, void const* b2,
    void* z, void* workspace, size_t workspace_bytes, int32_t B, int32_t N, int32_t C, int32_t S, int32_t H,
    int32_t num_splits, float eps, cudaStream_t stream);

/* A short English description of a status code (static storage). */
COTOK_API char const* cotok_status_string(int32_t status);

#ifdef __cplusplus
}
#endif

#endif /* COTOK_TOKENLEARNER_H */
