// FlexMLRT runtime: runs a compiled .rai bundle on the Ryzen AI NPU.
//
// The whole FlexMLRT implementation is this file. It talks to the SDK only
// through the shim in flexmlrt_assumptions.h (fxb::sdk), which also lists what
// is assumed about the SDK. Built into the extension when CMake finds the SDK
// (FXB_HAVE_FLEXMLRT, FXB_FLEXMLRT_SDK); otherwise compiled on its own against
// the header's stand-in declarations so that it at least type-checks.
//
// NOT RUN ON AN NPU: nothing in this file has executed on real hardware.
#include <filesystem>
#include <sstream>

#include "flexmlrt_assumptions.h"
#include "runtime.h"

namespace fxb {
namespace {

// The dtype is inferred from the element size (A5): it must name one dtype.
constexpr bool element_sizes_are_distinct() {
  for (std::size_t i = 0; i < kFlexMLRTDTypes.size(); ++i)
    for (std::size_t j = i + 1; j < kFlexMLRTDTypes.size(); ++j)
      if (dtype_size(kFlexMLRTDTypes[i]) == dtype_size(kFlexMLRTDTypes[j])) return false;
  return true;
}
static_assert(element_sizes_are_distinct(),
              "kFlexMLRTDTypes: two dtypes of one element size cannot be told apart (A5)");

std::string accepted_dtypes() {
  std::string out;
  for (DType t : kFlexMLRTDTypes) out += (out.empty() ? "" : ", ") + std::string(dtype_name(t));
  return out;
}

class FlexMLRTRuntime final : public Runtime {
 public:
  FlexMLRTRuntime(std::shared_ptr<MappedFile> file, const RuntimeOptions& opt)
      : file_(std::move(file)) {
    const std::string& path = file_->path();
    std::string cache_dir = opt.cache_dir;
    if (cache_dir.empty()) {
      cache_dir = std::filesystem::absolute(path).parent_path().string();
    }
    try {
      model_ = sdk::open_model(file_->data(), file_->size(), path, opt.device, opt.subgraph,
                               cache_dir, opt.execute_mode);
    } catch (const std::exception& e) {
      throw BundleError("FlexMLRT could not load '" + path + "' (device '" + opt.device +
                        "', subgraph '" + opt.subgraph + "'): " + e.what());
    }
    if (!model_) {
      throw BundleError("FlexMLRT rejected '" + path + "' (device '" + opt.device +
                        "', subgraph '" + opt.subgraph +
                        "'): Model::good() is false; check the .rai file, the subgraph "
                        "name and that the NPU is available");
    }
    inputs_ = specs_from(sdk::list_io(*model_, true), "input", in_types_);
    outputs_ = specs_from(sdk::list_io(*model_, false), "output", out_types_);
    if (inputs_.empty() || outputs_.empty()) {
      throw BundleError("FlexMLRT reports no " +
                        std::string(inputs_.empty() ? "input" : "output") + " tensors for '" +
                        path + "'");
    }
  }

  ~FlexMLRTRuntime() override { model_.reset(); }  // before file_ unmaps (A6)

  const char* kind() const override { return "flexmlrt"; }
  const std::vector<TensorSpec>& inputs() const override { return inputs_; }
  const std::vector<TensorSpec>& outputs() const override { return outputs_; }

  void run(const std::vector<const void*>& in, const std::vector<void*>& out) override {
    std::vector<sdk::IoBinding> ib, ob;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      // The SDK's struct has a non-const pointer; inputs are only read (A4).
      ib.push_back(binding(inputs_[i], i, const_cast<void*>(in[i]), in_types_[i]));
    }
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      ob.push_back(binding(outputs_[i], i, out[i], out_types_[i]));
    }
    try {
      sdk::forward(*model_, ib, ob);
    } catch (const std::exception& e) {
      throw BridgeError(std::string("FlexMLRT forward failed: ") + e.what());
    }
  }

 private:
  static sdk::IoBinding binding(const TensorSpec& s, std::size_t index, void* data,
                                const std::string& dtype) {
    sdk::IoBinding b;
    b.name = s.name;
    b.index = static_cast<int>(index);
    b.data = data;
    b.nbytes = s.nbytes();
    b.shape = s.shape;
    b.dtype = dtype;
    return b;
  }

  std::vector<TensorSpec> specs_from(const std::vector<sdk::IoInfo>& io, const char* role,
                                     std::vector<std::string>& types) {
    std::vector<TensorSpec> specs;
    for (const auto& t : io) {
      TensorSpec s;
      s.name = t.name;
      s.shape = t.shape;
      std::size_t numel = s.numel();
      std::size_t elem = numel ? t.nbytes / numel : 0;
      const DType* found = nullptr;
      for (const DType& d : kFlexMLRTDTypes) {
        if (dtype_size(d) == elem) found = &d;
      }
      if (numel == 0 || elem * numel != t.nbytes || !found) {
        std::ostringstream os;
        os << "FlexMLRT " << role << " '" << t.name << "' has shape " << shape_str(t.shape)
           << " and " << t.nbytes << " bytes (" << (numel ? std::to_string(elem) : "?")
           << " per element); this build's FlexMLRT runtime takes only " << accepted_dtypes()
           << " tensors (kFlexMLRTDTypes in runtime.h, assumption A5 in "
           << "flexmlrt_assumptions.h): export the graph with those dtypes";
        throw BundleError(os.str());
      }
      s.dtype = *found;
      types.push_back(sdk::type_string(dtype_name(*found)));
      specs.push_back(std::move(s));
    }
    return specs;
  }

  std::shared_ptr<MappedFile> file_;  // declared first: outlives model_
  std::unique_ptr<sdk::Model> model_;
  std::vector<TensorSpec> inputs_, outputs_;
  std::vector<std::string> in_types_, out_types_;
};

}  // namespace

#if defined(FXB_HAVE_FLEXMLRT)
bool flexmlrt_available() { return true; }
std::unique_ptr<Runtime> make_flexmlrt_runtime(std::shared_ptr<MappedFile> file,
                                               const RuntimeOptions& options) {
  return std::make_unique<FlexMLRTRuntime>(std::move(file), options);
}
#else
// Type-check build: keep the class referenced so the compiler instantiates it.
std::unique_ptr<Runtime> fxb_typecheck_make_flexmlrt_runtime(std::shared_ptr<MappedFile> file,
                                                             const RuntimeOptions& options) {
  return std::make_unique<FlexMLRTRuntime>(std::move(file), options);
}
#endif

}  // namespace fxb
