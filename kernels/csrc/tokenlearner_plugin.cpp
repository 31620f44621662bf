// TensorRT IPluginV3 wrapper of the fused TokenLearner kernel. See tokenlearner_plugin.h.

#include "tokenlearner_plugin.h"

#include "tokenlearner.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <exception>
#include <mutex>
#include <new>

using namespace nvinfer1;

namespace
{

constexpr float kDefaultEps = 1e-6F;
constexpr int32_t kInX = 0;
constexpr int32_t kInW1 = 3;
constexpr int32_t kInW2 = 5;
constexpr int32_t kMinInputs = 7; // without cond_bias
constexpr int32_t kMaxInputs = 8; // with cond_bias (input 7)
// Extra bytes so enqueue can align TensorRT's workspace to the kernel's 256 bytes.
constexpr size_t kWorkspaceAlign = 256;

std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder = nullptr;

void logError(char const* msg) noexcept
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    if (gLoggerFinder != nullptr)
    {
        if (ILogger* logger = gLoggerFinder->findLogger())
        {
            logger->log(ILogger::Severity::kERROR, msg);
        }
    }
}

int32_t currentSmCount() noexcept
{
    int dev = 0;
    int sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess
        || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    {
        return 1;
    }
    return sms;
}

// A dimension known at build time must fit the kernel; -1 (dynamic) is checked at run time.
bool dimFits(int64_t d, int64_t lo, int64_t hi) noexcept
{
    return d < 0 || (d >= lo && d <= hi);
}

bool shapesSupported(Dims const& x, Dims const& w1, Dims const& w2) noexcept
{
    return x.nbDims == 3 && w1.nbDims == 2 && w2.nbDims == 2
        && dimFits(w1.d[0], COTOK_TOKENLEARNER_HIDDEN, COTOK_TOKENLEARNER_HIDDEN)
        && dimFits(w2.d[0], 1, COTOK_TOKENLEARNER_MAX_S) && dimFits(x.d[2], 1, COTOK_TOKENLEARNER_MAX_C);
}

} // namespace

namespace cotok
{

TokenLearnerPlugin::TokenLearnerPlugin(float eps, int32_t nbInputs)
    : mEps(eps)
    , mNbInputs(nbInputs)
{
    // The field data points into this object, so a copy rebuilds it (see the copy constructor).
    mFields.emplace_back("eps", &mEps, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back("num_inputs", &mNbInputs, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

TokenLearnerPlugin::TokenLearnerPlugin(TokenLearnerPlugin const& other)
    : TokenLearnerPlugin(other.mEps, other.mNbInputs)
{
}

IPluginCapability* TokenLearnerPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* TokenLearnerPlugin::clone() noexcept
{
    return new (std::nothrow) TokenLearnerPlugin(*this);
}

char const* TokenLearnerPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TokenLearnerPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TokenLearnerPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t TokenLearnerPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs < kMinInputs || nbInputs > kMaxInputs || nbOutputs != 1)
    {
        logError("CoTokTokenLearner: expects 7 inputs (8 with cond_bias) and 1 output");
        return 1;
    }
    if (!shapesSupported(in[kInX].desc.dims, in[kInW1].desc.dims, in[kInW2].desc.dims))
    {
        logError("CoTokTokenLearner: needs x [B, N, C<=1024], w1 [64, C], w2 [S<=16, 64]");
        return 1;
    }
    mNbInputs = nbInputs;
    return 0;
}

int32_t TokenLearnerPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs < 1)
    {
        return 1;
    }
    outputTypes[0] = inputTypes[kInX];
    return 0;
}

int32_t TokenLearnerPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs < kMinInputs || nbOutputs != 1 || inputs[kInX].nbDims != 3 || inputs[kInW2].nbDims != 2)
    {
        return 1;
    }
    outputs[0].nbDims = 3;
    outputs[0].d[0] = inputs[kInX].d[0];  // B
    outputs[0].d[1] = inputs[kInW2].d[0]; // S
    outputs[0].d[2] = inputs[kInX].d[2];  // C
    return 0;
}

bool TokenLearnerPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t /*nbInputs*/, int32_t /*nbOutputs*/) noexcept
{
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    // One dtype for every tensor: the kernel reads weights in the dtype of x.
    return desc.type == inOut[0].desc.type;
}

int32_t TokenLearnerPlugin::getNbOutputs() const noexcept
{
    return 1;
}

size_t TokenLearnerPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    // The slicing of N depends on the runtime B; reserve the most any B up to
    // the profile's maximum can use on this GPU (the engine is built for it).
    auto const maxB = static_cast<int32_t>(inputs[kInX].max.d[0]);
    auto const C = static_cast<int32_t>(inputs[kInX].max.d[2]);
    auto const S = static_cast<int32_t>(inputs[kInW2].max.d[0]);
    return cotok_tokenlearner_workspace_bound(maxB, S, C, currentSmCount()) + kWorkspaceAlign;
}

int32_t TokenLearnerPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs < kMinInputs || nbInputs > kMaxInputs || nbOutputs != 1)
    {
        return 1;
    }
    if (!shapesSupported(in[kInX].dims, in[kInW1].dims, in[kInW2].dims))
    {
        logError("CoTokTokenLearner: needs x [B, N, C<=1024], w1 [64, C], w2 [S<=16, 64]");
        return 1;
    }
    mNbInputs = nbInputs;
    return 0;
}

int32_t TokenLearnerPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    Dims const& x = inputDesc[kInX].dims;
    auto const B = static_cast<int32_t>(x.d[0]);
    auto const N = static_cast<int32_t>(x.d[1]);
    auto const C = static_cast<int32_t>(x.d[2]);
    auto const S = static_cast<int32_t>(inputDesc[kInW2].dims.d[0]);
    auto const H = static_cast<int32_t>(inputDesc[kInW1].dims.d[0]);
    int32_t const dtype = inputDesc[kInX].type == DataType::kHALF ? COTOK_DTYPE_FLOAT16 : COTOK_DTYPE_FLOAT32;

    // What getWorkspaceSize reserved for the profile's largest B covers this B.
    size_t wsBytes = cotok_tokenlearner_workspace_bound(B, S, C, currentSmCount());
    auto wsAddr = reinterpret_cast<uintptr_t>(workspace);
    uintptr_t const aligned = (wsAddr + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
    void* ws = workspace != nullptr ? reinterpret_cast<void*>(aligned) : nullptr;
    if (ws == nullptr)
    {
        wsBytes = 0;
    }

    int32_t const status = cotok_tokenlearner_forward(dtype, inputs[0], mNbInputs == kMaxInputs ? inputs[7] : nullptr,
        inputs[1], inputs[2], inputs[3], inputs[4], inputs[5], inputs[6], outputs[0], ws, wsBytes, B, N, C, S, H,
        /*num_splits=*/0, mEps, stream);
    if (status != COTOK_OK)
    {
        logError(cotok_status_string(status));
    }
    return status;
}

IPluginV3* TokenLearnerPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept
{
    // No per-context resources: the workspace comes from TensorRT.
    return clone();
}

PluginFieldCollection const* TokenLearnerPlugin::getFieldsToSerialize() noexcept
{
    return &mFieldCollection;
}

TokenLearnerPluginCreator::TokenLearnerPluginCreator()
{
    mFields.emplace_back("eps", nullptr, PluginFieldType::kFLOAT32, 1);
    mFields.emplace_back("num_inputs", nullptr, PluginFieldType::kINT32, 1);
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
}

IPluginV3* TokenLearnerPluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        float eps = kDefaultEps;
        int32_t nbInputs = kMaxInputs;
        // The ONNX parser passes every node attribute (plugin_version and
        // plugin_namespace too); only the fields this plugin knows are read.
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name == nullptr || f.data == nullptr || f.length < 1)
            {
                continue;
            }
            if (std::strcmp(f.name, "eps") == 0)
            {
                if (f.type == PluginFieldType::kFLOAT32)
                {
                    eps = *static_cast<float const*>(f.data);
                }
                else if (f.type == PluginFieldType::kFLOAT64)
                {
                    eps = static_cast<float>(*static_cast<double const*>(f.data));
                }
            }
            else if (std::strcmp(f.name, "num_inputs") == 0 && f.type == PluginFieldType::kINT32)
            {
                nbInputs = *static_cast<int32_t const*>(f.data);
            }
        }
        if (!(eps > 0.0F) || nbInputs < kMinInputs || nbInputs > kMaxInputs)
        {
            logError("CoTokTokenLearner: eps must be > 0 and num_inputs 7 or 8");
            return nullptr;
        }
        return new TokenLearnerPlugin(eps, nbInputs);
    }
    catch (std::exception const& e)
    {
        logError(e.what());
    }
    return nullptr;
}

PluginFieldCollection const* TokenLearnerPluginCreator::getFieldNames() noexcept
{
    return &mFieldCollection;
}

char const* TokenLearnerPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TokenLearnerPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TokenLearnerPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

} // namespace cotok

extern "C" void setLoggerFinder(ILoggerFinder* finder)
{
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    gLoggerFinder = finder;
}

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static cotok::TokenLearnerPluginCreator sCreator;
    static IPluginCreatorInterface* const sCreators[] = {&sCreator};
    nbCreators = 1;
    return sCreators;
}

extern "C" int32_t cotokPluginTensorRTVersion()
{
    return COTOK_PLUGIN_TENSORRT_VERSION;
}
