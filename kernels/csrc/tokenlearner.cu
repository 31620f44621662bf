// Fused TokenLearner forward for CUDA (sm_80+, Jetson Orin sm_87). See tokenlearner.h.
//
// One block of 256 threads per (batch element, slice of N). The block walks
// its slice in tiles of 32 positions:
//   1. the x tile [32, C] goes to shared memory (read from HBM exactly once);
//   2. LayerNorm statistics of x, one warp per row, two passes
//      over the row (mean, then centred variance) for the reference's accuracy;
//   3. U = (LN(x) + cond_bias) @ W1^T [32, 64]: FP16 on tensor cores (WMMA, FP32 accumulate)
//      when C % 16 == 0 and W1 is 32-byte aligned, else FP32 FMAs; the
//      normalised rows are produced chunk by chunk, never as a full copy;
//   4. GELU, then logits = U @ W2^T + b2 [32, S] (tiny, CUDA cores);
//   5. online softmax per map: running max m and sum l, tile weights p;
//   6. acc[S, C] = acc * exp(m_old - m_new) + p^T @ x_tile, in registers.
// A single slice writes z = acc / l; several write (m, l, acc) to the
// workspace and tokenlearner_combine merges them.

#include "tokenlearner.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>
#include <mma.h>

#include <stdint.h>

namespace
{

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTileN = 32; // == warp size: the softmax gives one lane per position
constexpr int kH = COTOK_TOKENLEARNER_HIDDEN;
constexpr int kMaxS = COTOK_TOKENLEARNER_MAX_S;
constexpr int kMaxCols = (COTOK_TOKENLEARNER_MAX_C + kThreads - 1) / kThreads;
constexpr int kChunkFma = 32;  // k-chunk of the FP32 MLP path
constexpr int kChunkWmma = 64; // k-chunk of the tensor-core MLP path
// Row strides (elements) padded so that the column-wise shared-memory
// accesses of each path fall in distinct banks; WMMA needs multiples of 8
// halves / 4 floats and 32-byte aligned tiles.
constexpr int kLdU = kH + 4;
constexpr int kLdWct = kH + 1;
constexpr int kLdYcFma = kChunkFma + 1;
constexpr int kLdYcWmma = kChunkWmma + 8;

static_assert(kTileN == 32, "the softmax step maps one lane to one position");
static_assert(kH == 64 && kWarps == 8, "the WMMA step tiles U [32, 64] as 2 x 4 warps");

__host__ __device__ constexpr size_t alignUp(size_t v, size_t a)
{
    return (v + a - 1) / a * a;
}

// Byte offsets of the dynamic shared-memory regions (host and device agree).
struct SmemLayout
{
    size_t xs, mean, rstd, u, w2s, p, alpha, mRun, lRun, wct, yc, total;
};

__host__ __device__ inline SmemLayout smemLayout(int C, size_t elemBytes, bool wmma)
{
    SmemLayout L{};
    size_t o = 0;
    auto take = [&o](size_t bytes) {
        size_t at = o;
        o = alignUp(o + bytes, 128);
        return at;
    };
    L.xs = take(kTileN * static_cast<size_t>(C) * elemBytes);
    L.mean = take(kTileN * sizeof(float));
    L.rstd = take(kTileN * sizeof(float));
    L.u = take(kTileN * kLdU * sizeof(float));
    L.w2s = take(kMaxS * kH * sizeof(float));
    L.p = take(kMaxS * kTileN * sizeof(float));
    L.alpha = take(kMaxS * sizeof(float));
    L.mRun = take(kMaxS * sizeof(float));
    L.lRun = take(kMaxS * sizeof(float));
    if (wmma)
    {
        L.wct = o;
        L.yc = take(kTileN * kLdYcWmma * sizeof(__half));
    }
    else
    {
        L.wct = take(kChunkFma * kLdWct * sizeof(float));
        L.yc = take(kTileN * kLdYcFma * sizeof(float));
    }
    L.total = o;
    return L;
}

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

__device__ __forceinline__ float warpSum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warpMax(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float geluErf(float v)
{
    // Exact erf GELU as in F.gelu's default (not the tanh approximation).
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

struct FwdParams
{
    void const* x;
    void const* cb;
    void const* lnw;
    void const* lnb;
    void const* w1;
    void const* b1;
    void const* w2;
    void const* b2;
    void* z;
    float* wsM;
    float* wsL;
    float* wsAcc;
    int N, C, S, splitLen, numSplits;
    float eps;
};

// LN(x)[r, c] + cb[c] of the tile row r held in shared memory: the question's
// bias is added after the LayerNorm.
template <typename T>
__device__ __forceinline__ float normalised(T const* xs, float const* mean, float const* rstd, T const* cb,
    T const* lnw, T const* lnb, int C, int r, int c)
{
    float const y = (toFloat(xs[r * C + c]) - mean[r]) * rstd[r] * toFloat(lnw[c]) + toFloat(lnb[c]);
    return cb ? y + toFloat(cb[c]) : y;
}

// U[32, 64] = LN(x_tile) @ W1^T with FP32 FMAs: thread (h, row group of 8).
template <typename T>
__device__ void mlpFirstFma(unsigned char* smem, SmemLayout const& L, FwdParams const& p, T const* cb)
{
    T const* xs = reinterpret_cast<T const*>(smem + L.xs);
    float const* mean = reinterpret_cast<float const*>(smem + L.mean);
    float const* rstd = reinterpret_cast<float const*>(smem + L.rstd);
    float* u = reinterpret_cast<float*>(smem + L.u);
    float* wct = reinterpret_cast<float*>(smem + L.wct);
    float* yc = reinterpret_cast<float*>(smem + L.yc);
    T const* w1 = static_cast<T const*>(p.w1);
    T const* lnw = static_cast<T const*>(p.lnw);
    T const* lnb = static_cast<T const*>(p.lnb);
    int const C = p.C;
    int const tid = threadIdx.x;
    int const h = tid % kH;
    int const rowGroup = tid / kH; // 4 groups of 8 rows; a warp shares one group
    constexpr int kRowsPerThread = kTileN / (kThreads / kH);
    float acc[kRowsPerThread];
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j)
        acc[j] = 0.0f;

    for (int k0 = 0; k0 < C; k0 += kChunkFma)
    {
        int const kc = min(kChunkFma, C - k0);
        __syncthreads(); // the previous chunk's readers are done
        for (int i = tid; i < kH * kChunkFma; i += kThreads)
        {
            int const hh = i / kChunkFma, kk = i % kChunkFma;
            wct[kk * kLdWct + hh] = kk < kc ? toFloat(w1[static_cast<size_t>(hh) * C + k0 + kk]) : 0.0f;
        }
        for (int i = tid; i < kTileN * kChunkFma; i += kThreads)
        {
            int const r = i / kChunkFma, kk = i % kChunkFma;
            yc[r * kLdYcFma + kk] = kk < kc ? normalised(xs, mean, rstd, cb, lnw, lnb, C, r, k0 + kk) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < kc; ++kk)
        {
            float const wv = wct[kk * kLdWct + h];
#pragma unroll
            for (int j = 0; j < kRowsPerThread; ++j)
                acc[j] += yc[(rowGroup * kRowsPerThread + j) * kLdYcFma + kk] * wv;
        }
    }
#pragma unroll
    for (int j = 0; j < kRowsPerThread; ++j)
        u[(rowGroup * kRowsPerThread + j) * kLdU + h] = acc[j];
}

// U[32, 64] = LN(x_tile) @ W1^T on tensor cores: warp w owns the 16x16 tile
// (w / 4, w % 4). Needs C % 16 == 0 and a 32-byte aligned W1.
__device__ void mlpFirstWmma(unsigned char* smem, SmemLayout const& L, FwdParams const& p, __half const* cb)
{
    using namespace nvcuda;
    __half const* xs = reinterpret_cast<__half const*>(smem + L.xs);
    float const* mean = reinterpret_cast<float const*>(smem + L.mean);
    float const* rstd = reinterpret_cast<float const*>(smem + L.rstd);
    float* u = reinterpret_cast<float*>(smem + L.u);
    __half* yc = reinterpret_cast<__half*>(smem + L.yc);
    __half const* w1 = static_cast<__half const*>(p.w1);
    __half const* lnw = static_cast<__half const*>(p.lnw);
    __half const* lnb = static_cast<__half const*>(p.lnb);
    int const C = p.C;
    int const tid = threadIdx.x;
    int const warp = tid / 32;
    int const mi = warp / 4, nj = warp % 4;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> accFrag;
    wmma::fill_fragment(accFrag, 0.0f);
    for (int k0 = 0; k0 < C; k0 += kChunkWmma)
    {
        int const kc = min(kChunkWmma, C - k0); // a multiple of 16
        __syncthreads();
        for (int i = tid; i < kTileN * kChunkWmma; i += kThreads)
        {
            int const r = i / kChunkWmma, kk = i % kChunkWmma;
            float const v = kk < kc ? normalised(xs, mean, rstd, cb, lnw, lnb, C, r, k0 + kk) : 0.0f;
            yc[r * kLdYcWmma + kk] = __float2half_rn(v);
        }
        __syncthreads();
        for (int kk = 0; kk < kc; kk += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> aFrag;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> bFrag;
            wmma::load_matrix_sync(aFrag, yc + mi * 16 * kLdYcWmma + kk, kLdYcWmma);
            // W1 [H, C] row-major is W1^T [C, H] column-major with leading dimension C.
            wmma::load_matrix_sync(bFrag, w1 + static_cast<size_t>(nj * 16) * C + k0 + kk, C);
            wmma::mma_sync(accFrag, aFrag, bFrag, accFrag);
        }
    }
    wmma::store_matrix_sync(u + mi * 16 * kLdU + nj * 16, accFrag, kLdU, wmma::mem_row_major);
}

template <typename T, bool kWmma, int kCols>
__global__ void __launch_bounds__(kThreads) tokenlearnerFwd(FwdParams p)
{
    extern __shared__ __align__(128) unsigned char smem[];
    SmemLayout const L = smemLayout(p.C, sizeof(T), kWmma);
    T* xs = reinterpret_cast<T*>(smem + L.xs);
    float* mean = reinterpret_cast<float*>(smem + L.mean);
    float* rstd = reinterpret_cast<float*>(smem + L.rstd);
    float* u = reinterpret_cast<float*>(smem + L.u);
    float* w2s = reinterpret_cast<float*>(smem + L.w2s);
    float* pt = reinterpret_cast<float*>(smem + L.p);
    float* alpha = reinterpret_cast<float*>(smem + L.alpha);
    float* mRun = reinterpret_cast<float*>(smem + L.mRun);
    float* lRun = reinterpret_cast<float*>(smem + L.lRun);

    int const C = p.C, S = p.S;
    int const b = blockIdx.x, split = blockIdx.y;
    int const nStart = split * p.splitLen;
    int const nEnd = min(nStart + p.splitLen, p.N);
    int const tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    T const* x = static_cast<T const*>(p.x) + static_cast<size_t>(b) * p.N * C;
    T const* cb = p.cb ? static_cast<T const*>(p.cb) + static_cast<size_t>(b) * C : nullptr;
    T const* b1 = static_cast<T const*>(p.b1);
    T const* w2 = static_cast<T const*>(p.w2);
    T const* b2 = static_cast<T const*>(p.b2);

    for (int i = tid; i < kMaxS * kH; i += kThreads)
        w2s[i] = i / kH < S ? toFloat(w2[i]) : 0.0f;
    if (tid < kMaxS)
    {
        mRun[tid] = -CUDART_INF_F;
        lRun[tid] = 0.0f;
    }
    float acc[kMaxS][kCols];
#pragma unroll
    for (int s = 0; s < kMaxS; ++s)
#pragma unroll
        for (int j = 0; j < kCols; ++j)
            acc[s][j] = 0.0f;

    for (int n0 = nStart; n0 < nEnd; n0 += kTileN)
    {
        int const rows = min(kTileN, nEnd - n0);
        __syncthreads(); // the previous tile's readers of xs and pt are done
        for (int i = tid; i < kTileN * C; i += kThreads)
        {
            int const r = i / C;
            xs[i] = r < rows ? x[static_cast<size_t>(n0) * C + i] : fromFloat<T>(0.0f);
        }
        __syncthreads();

        for (int r = warp; r < kTileN; r += kWarps)
        {
            float sum = 0.0f;
            for (int c = lane; c < C; c += 32)
                sum += toFloat(xs[r * C + c]);
            float const mu = warpSum(sum) / C;
            float sq = 0.0f;
            for (int c = lane; c < C; c += 32)
            {
                float const d = toFloat(xs[r * C + c]) - mu;
                sq += d * d;
            }
            float const var = warpSum(sq) / C;
            if (lane == 0)
            {
                mean[r] = mu;
                rstd[r] = rsqrtf(var + p.eps);
            }
        }
        __syncthreads();

        if constexpr (kWmma)
            mlpFirstWmma(smem, L, p, cb);
        else
            mlpFirstFma<T>(smem, L, p, cb);
        __syncthreads();

        for (int i = tid; i < kTileN * kH; i += kThreads)
        {
            int const r = i / kH, h = i % kH;
            u[r * kLdU + h] = geluErf(u[r * kLdU + h] + toFloat(b1[h]));
        }
        __syncthreads();

        for (int i = tid; i < kTileN * S; i += kThreads)
        {
            int const r = i / S, s = i % S;
            float a = toFloat(b2[s]);
#pragma unroll 16
            for (int h = 0; h < kH; ++h)
                a += u[r * kLdU + h] * w2s[s * kH + h];
            pt[s * kTileN + r] = r < rows ? a : -CUDART_INF_F;
        }
        __syncthreads();

        // Online softmax, one warp per map and one lane per position. The
        // first tile of a slice always has a real position, so mNew is finite
        // and exp(-inf) = 0 clears the empty state.
        for (int s = warp; s < S; s += kWarps)
        {
            float const v = pt[s * kTileN + lane];
            float const mOld = mRun[s];
            float const mNew = fmaxf(mOld, warpMax(v));
            float const e = expf(v - mNew);
            float const tileSum = warpSum(e);
            pt[s * kTileN + lane] = e;
            if (lane == 0)
            {
                float const a = expf(mOld - mNew);
                alpha[s] = a;
                lRun[s] = lRun[s] * a + tileSum;
                mRun[s] = mNew;
            }
        }
        __syncthreads();

#pragma unroll
        for (int s = 0; s < kMaxS; ++s)
        {
            if (s < S)
            {
                float const a = alpha[s];
#pragma unroll
                for (int j = 0; j < kCols; ++j)
                    acc[s][j] *= a;
            }
        }
        for (int r = 0; r < rows; ++r)
        {
            float xv[kCols];
#pragma unroll
            for (int j = 0; j < kCols; ++j)
            {
                int const c = tid + j * kThreads;
                xv[j] = c < C ? toFloat(xs[r * C + c]) : 0.0f;
            }
#pragma unroll
            for (int s = 0; s < kMaxS; ++s)
            {
                if (s < S)
                {
                    float const pv = pt[s * kTileN + r];
#pragma unroll
                    for (int j = 0; j < kCols; ++j)
                        acc[s][j] += pv * xv[j];
                }
            }
        }
    }
    __syncthreads();

    if (p.numSplits == 1)
    {
        T* z = static_cast<T*>(p.z) + static_cast<size_t>(b) * S * C;
#pragma unroll
        for (int s = 0; s < kMaxS; ++s)
        {
            if (s < S)
            {
                float const inv = 1.0f / lRun[s];
#pragma unroll
                for (int j = 0; j < kCols; ++j)
                {
                    int const c = tid + j * kThreads;
                    if (c < C)
                        z[static_cast<size_t>(s) * C + c] = fromFloat<T>(acc[s][j] * inv);
                }
            }
        }
    }
    else
    {
        size_t const row = (static_cast<size_t>(b) * p.numSplits + split) * S;
        if (tid < S)
        {
            p.wsM[row + tid] = mRun[tid];
            p.wsL[row + tid] = lRun[tid];
        }
#pragma unroll
        for (int s = 0; s < kMaxS; ++s)
        {
            if (s < S)
            {
#pragma unroll
                for (int j = 0; j < kCols; ++j)
                {
                    int const c = tid + j * kThreads;
                    if (c < C)
                        p.wsAcc[(row + s) * C + c] = acc[s][j];
                }
            }
        }
    }
}

// z[b, s] = sum_k exp(m_k - M) acc_k / sum_k exp(m_k - M) l_k with M = max_k m_k:
// the online-softmax rescaling applied across slices. One block per (b, s).
template <typename T>
__global__ void __launch_bounds__(kThreads) tokenlearnerCombine(
    float const* wsM, float const* wsL, float const* wsAcc, T* z, int S, int C, int numSplits)
{
    __shared__ float weight[COTOK_TOKENLEARNER_MAX_SPLITS];
    __shared__ float invDenom;
    int const b = blockIdx.x, s = blockIdx.y, tid = threadIdx.x;
    size_t const base = static_cast<size_t>(b) * numSplits;
    float mMax = -CUDART_INF_F;
    for (int k = 0; k < numSplits; ++k)
        mMax = fmaxf(mMax, wsM[(base + k) * S + s]);
    for (int k = tid; k < numSplits; k += kThreads)
        weight[k] = expf(wsM[(base + k) * S + s] - mMax);
    __syncthreads();
    if (tid == 0)
    {
        float d = 0.0f;
        for (int k = 0; k < numSplits; ++k)
            d += weight[k] * wsL[(base + k) * S + s];
        invDenom = 1.0f / d;
    }
    __syncthreads();
    for (int c = tid; c < C; c += kThreads)
    {
        float v = 0.0f;
        for (int k = 0; k < numSplits; ++k)
            v += weight[k] * wsAcc[((base + k) * S + s) * C + c];
        z[(static_cast<size_t>(b) * S + s) * C + c] = fromFloat<T>(v * invDenom);
    }
}

struct WorkspaceLayout
{
    size_t m, l, acc, total;
};

WorkspaceLayout workspaceLayout(int32_t B, int32_t S, int32_t C, int32_t numSplits)
{
    WorkspaceLayout W{};
    if (numSplits <= 1)
        return W;
    size_t const rows = static_cast<size_t>(B) * numSplits * S;
    W.m = 0;
    W.l = alignUp(rows * sizeof(float), 256);
    W.acc = W.l + alignUp(rows * sizeof(float), 256);
    W.total = W.acc + alignUp(rows * static_cast<size_t>(C) * sizeof(float), 256);
    return W;
}

int32_t maxSplitsForN(int32_t N)
{
    int32_t const tiles = (N + kTileN - 1) / kTileN;
    return tiles < COTOK_TOKENLEARNER_MAX_SPLITS ? tiles : COTOK_TOKENLEARNER_MAX_SPLITS;
}

template <typename T, bool kWmma, int kCols>
int32_t launchFwd(FwdParams const& p, int32_t B, int32_t numSplits, cudaStream_t stream)
{
    size_t const smem = smemLayout(p.C, sizeof(T), kWmma).total;
    int dev = 0;
    int maxOptin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess
        || cudaDeviceGetAttribute(&maxOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return COTOK_ERR_CUDA;
    if (smem > static_cast<size_t>(maxOptin))
        return COTOK_ERR_UNSUPPORTED; // C too large for this GPU's shared memory at this dtype
    auto kernel = tokenlearnerFwd<T, kWmma, kCols>;
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem))
        != cudaSuccess)
        return COTOK_ERR_CUDA;
    kernel<<<dim3(B, numSplits), kThreads, smem, stream>>>(p);
    if (cudaGetLastError() != cudaSuccess)
        return COTOK_ERR_CUDA;
    if (numSplits > 1)
    {
        tokenlearnerCombine<T><<<dim3(B, p.S), kThreads, 0, stream>>>(
            p.wsM, p.wsL, p.wsAcc, static_cast<T*>(p.z), p.S, p.C, numSplits);
        if (cudaGetLastError() != cudaSuccess)
            return COTOK_ERR_CUDA;
    }
    return COTOK_OK;
}

template <typename T, bool kWmma>
int32_t dispatchCols(FwdParams const& p, int32_t B, int32_t numSplits, cudaStream_t stream)
{
    static_assert(kMaxCols == 4, "instantiate one launch per column count");
    switch ((p.C + kThreads - 1) / kThreads)
    {
    case 1: return launchFwd<T, kWmma, 1>(p, B, numSplits, stream);
    case 2: return launchFwd<T, kWmma, 2>(p, B, numSplits, stream);
    case 3: return launchFwd<T, kWmma, 3>(p, B, numSplits, stream);
    case 4: return launchFwd<T, kWmma, 4>(p, B, numSplits, stream);
    default: return COTOK_ERR_UNSUPPORTED;
    }
}

} // namespace

extern "C" {

int32_t cotok_tokenlearner_default_splits(int32_t B, int32_t N, int32_t sm_count)
{
    if (B < 1 || N < 1)
        return 1;
    int32_t const target = 2 * (sm_count > 0 ? sm_count : 1);
    int32_t splits = (target + B - 1) / B;
    int32_t const cap = maxSplitsForN(N);
    splits = splits < cap ? splits : cap;
    return splits > 1 ? splits : 1;
}

size_t cotok_tokenlearner_workspace_size(int32_t B, int32_t S, int32_t C, int32_t num_splits)
{
    if (B < 1 || S < 1 || C < 1)
        return 0;
    return workspaceLayout(B, S, C, num_splits).total;
}

size_t cotok_tokenlearner_workspace_bound(int32_t max_B, int32_t S, int32_t C, int32_t sm_count)
{
    size_t bound = 0;
    for (int32_t b = 1; b <= max_B; ++b)
    {
        // The default slicing is largest for long N, so take N at its cap.
        int32_t const splits = cotok_tokenlearner_default_splits(b, COTOK_TOKENLEARNER_MAX_SPLITS * kTileN, sm_count);
        size_t const bytes = cotok_tokenlearner_workspace_size(b, S, C, splits);
        bound = bytes > bound ? bytes : bound;
    }
    return bound;
}

int32_t cotok_tokenlearner_forward(int32_t dtype, void const* x, void const* cond_bias, void const* ln_weight,
    void const* ln_bias, void const* w1, void const* b1, void const* w2, void const* b2, void* z, void* workspace,
    size_t workspace_bytes, int32_t B, int32_t N, int32_t C, int32_t S, int32_t H, int32_t num_splits, float eps,
    cudaStream_t stream)
{
    if (!x || !ln_weight || !ln_bias || !w1 || !b1 || !w2 || !b2 || !z)
        return COTOK_ERR_INVALID_ARGUMENT;
    if (B < 1 || N < 1 || C < 1 || S < 1 || num_splits < 0 || !(eps > 0.0f))
        return COTOK_ERR_INVALID_ARGUMENT;
    if (H != kH || S > kMaxS || C > COTOK_TOKENLEARNER_MAX_C)
        return COTOK_ERR_UNSUPPORTED;
    if (dtype != COTOK_DTYPE_FLOAT32 && dtype != COTOK_DTYPE_FLOAT16)
        return COTOK_ERR_UNSUPPORTED;

    if (num_splits == 0)
    {
        int dev = 0;
        int sms = 0;
        if (cudaGetDevice(&dev) != cudaSuccess
            || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            return COTOK_ERR_CUDA;
        num_splits = cotok_tokenlearner_default_splits(B, N, sms);
        // Automatic slicing never asks for more workspace than it was given.
        while (num_splits > 1 && cotok_tokenlearner_workspace_size(B, S, C, num_splits) > workspace_bytes)
            --num_splits;
    }
    if (num_splits > COTOK_TOKENLEARNER_MAX_SPLITS)
        return COTOK_ERR_INVALID_ARGUMENT;
    // Cut N into slices of whole tiles, so every slice (and the first tile of
    // each) holds a real position; this can only lower the slice count.
    int32_t const tiles = (N + kTileN - 1) / kTileN;
    int32_t splits = num_splits < tiles ? num_splits : tiles;
    int32_t const tilesPerSplit = (tiles + splits - 1) / splits;
    int32_t const splitLen = tilesPerSplit * kTileN;
    splits = (N + splitLen - 1) / splitLen;

    FwdParams p{};
    p.x = x;
    p.cb = cond_bias;
    p.lnw = ln_weight;
    p.lnb = ln_bias;
    p.w1 = w1;
    p.b1 = b1;
    p.w2 = w2;
    p.b2 = b2;
    p.z = z;
    p.N = N;
    p.C = C;
    p.S = S;
    p.splitLen = splitLen;
    p.numSplits = splits;
    p.eps = eps;
    if (splits > 1)
    {
        WorkspaceLayout const W = workspaceLayout(B, S, C, splits);
        if (!workspace || workspace_bytes < W.total || reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
            return COTOK_ERR_INVALID_ARGUMENT;
        unsigned char* ws = static_cast<unsigned char*>(workspace);
        p.wsM = reinterpret_cast<float*>(ws + W.m);
        p.wsL = reinterpret_cast<float*>(ws + W.l);
        p.wsAcc = reinterpret_cast<float*>(ws + W.acc);
    }

    if (dtype == COTOK_DTYPE_FLOAT32)
        return dispatchCols<float, false>(p, B, splits, stream);
    bool const wmmaOk = C % 16 == 0 && reinterpret_cast<uintptr_t>(w1) % 32 == 0;
    return wmmaOk ? dispatchCols<__half, true>(p, B, splits, stream)
                  : dispatchCols<__half, false>(p, B, splits, stream);
}

char const* cotok_status_string(int32_t status)
{
    switch (status)
    {
    case COTOK_OK: return "ok";
    case COTOK_ERR_INVALID_ARGUMENT: return "invalid argument (null pointer, size out of range or workspace too small)";
    case COTOK_ERR_UNSUPPORTED: return "unsupported size or dtype (H must be 64, S <= 16, C <= 1024, fp32/fp16)";
    case COTOK_ERR_CUDA: return "CUDA error (see cudaGetLastError)";
    default: return "unknown status";
    }
}

} // extern "C"
