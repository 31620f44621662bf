/*
 * TensorRT plugin for the fused TokenLearner (IPluginV3, TensorRT 10.3 .. 11.x).
 *
 * Name "CoTokTokenLearner", version "2", namespace "cotok": what the ONNX
 * export (cotok_edge.kernels.onnx_plugin) writes as the node's op_type and its
 * plugin_version / plugin_namespace attributes, so TensorRT's ONNX parser maps
 * each node to this plugin through its fallback plugin importer.
 *
 * Inputs (all one dtype, FP32 or FP16, linear layout):
 *   0 x [B, N, C]   1 ln_weight [C]   2 ln_bias [C]   3 w1 [64, C]   4 b1 [64]
 *   5 w2 [S, 64]    6 b2 [S]          7 cond_bias [B, C] (optional)
 * Output: 0 z [B, S, C], dtype of x.
 * Fields: "eps" (FLOAT32, default 1e-6), the LayerNorm epsilon; "num_inputs"
 * (INT32, 7 or 8), set by the plugin itself and serialised with the engine.
 *
 * The library exports the two entry points TensorRT looks for when it loads
 * a plugin library (trtexec --dynamicPlugins, IPluginRegistry::loadLibrary,
 * IBuilderConfig::setPluginsToSerialize): setLoggerFinder and getCreators.
 *
 * TensorRT versions: one source for 10.3 (JetPack 6) .. 11.x, compiled in CI
 * against the real public headers of 10.3 and 11.1. The IPluginV3 interfaces
 * are the same in both; nvinfer1::ILoggerFinder is not: 11.x derives it from
 * IVersionedInterface, which shifts findLogger() in its vtable, so a library
 * compiled against 10.x headers would call the wrong function when TensorRT
 * 11 hands it a logger finder (and the other way round). The library must be
 * built against the headers of the TensorRT that loads it (finish_on_device.sh
 * builds it on the device); cotokPluginTensorRTVersion() says which headers it
 * was built against, so a loader can refuse a mismatch before TensorRT calls
 * setLoggerFinder.
 */
#ifndef COTOK_TOKENLEARNER_PLUGIN_H
#define COTOK_TOKENLEARNER_PLUGIN_H

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <string>
#include <vector>

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR < 3)
#error "CoTokTokenLearner needs TensorRT 10.3 or later (IPluginV3, getCreators)"
#endif

//! The TensorRT version of the headers this library is compiled against, as
//! major * 10000 + minor * 100 + patch (10.3.0 -> 100300).
#define COTOK_PLUGIN_TENSORRT_VERSION (NV_TENSORRT_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH)

namespace cotok
{

// Also in cotok_edge/contract.py (the ONNX export and the runtime read them there).
constexpr char const* kPluginName = "CoTokTokenLearner";
constexpr char const* kPluginVersion = "2";
constexpr char const* kPluginNamespace = "cotok";

class TokenLearnerPlugin final : public nvinfer1::IPluginV3,
                                 public nvinfer1::IPluginV3OneCore,
                                 public nvinfer1::IPluginV3OneBuild,
                                 public nvinfer1::IPluginV3OneRuntime
{
public:
    TokenLearnerPlugin(float eps, int32_t nbInputs);
    TokenLearnerPlugin(TokenLearnerPlugin const& other);
    TokenLearnerPlugin& operator=(TokenLearnerPlugin const&) = delete;
    ~TokenLearnerPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    float mEps;
    // 7 without cond_bias, 8 with it; learnt in configurePlugin and serialised
    // because enqueue is not told how many inputs it has.
    int32_t mNbInputs;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class TokenLearnerPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    TokenLearnerPluginCreator();
    ~TokenLearnerPluginCreator() override = default;

    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace cotok

#if defined(_WIN32)
#define COTOK_PLUGIN_API __declspec(dllexport)
#else
#define COTOK_PLUGIN_API __attribute__((visibility("default")))
#endif

extern "C"
{
    // Entry points TensorRT resolves when it loads this library as a plugin library.
    COTOK_PLUGIN_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
    COTOK_PLUGIN_API nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
    // COTOK_PLUGIN_TENSORRT_VERSION: which TensorRT headers the library was built against
    // (callable with ctypes before TensorRT loads the library).
    COTOK_PLUGIN_API int32_t cotokPluginTensorRTVersion();
}

#endif // COTOK_TOKENLEARNER_PLUGIN_H
