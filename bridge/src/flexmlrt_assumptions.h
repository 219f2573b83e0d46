// flexmlrt_assumptions.h -- EVERYTHING the bridge assumes about the FlexMLRT SDK.
//
// FlexMLRT (AMD Ryzen AI) ships a C++ client header, FlexMLClient.h, whose
// interface is not publicly documented. The bridge was written without the
// SDK, from the calls that code using it shows (the vLLM FlexMLRT bridge in
// seed 001, vision_flexmlrt.cpp, and other public users of FlexMLClient.h):
//
//   flexmlrt::client::Options opts;           // fields used below
//   opts.extOptions["fbs_buffer"] = (uint8_t*)mapped_rai;   // .rai, memory-mapped
//   opts.extOptions["fbs_buffer_size"] = (size_t)size;
//   opts.extOptions["cache_dir"] = std::string(dir);
//   flexmlrt::client::Model model(opts);  model.good();
//   model.getIOTensors("input" | "output", false)  -> std::vector<ErtTensorType>
//     tensor.getMetadata().name / .size (bytes) / .shape
//   model.forward(ifms, ofms, wts)  with std::vector<ErtIoTypeNew>
//     {name, idx, data, size (bytes), type ("float32"), shape (int64)}
//   outputs are preallocated by the caller; tensor names look like
//   "compute_graph.ifm_ddr" / "compute_graph.ofm_ddr".
//
// This header is the ONE place to adapt when the real SDK disagrees:
//   * Section A declares stand-ins for those SDK types. They are used only
//     when FXB_FLEXMLRT_SDK is not defined, i.e. for the type-check build that
//     compiles flexmlrt_runtime.cpp on machines without the SDK (it is never
//     linked or run). With the SDK, FlexMLClient.h replaces them.
//   * Section B is a thin shim: the only code that touches flexmlrt::client.
//     flexmlrt_runtime.cpp calls nothing else. If a name, a field or a
//     signature differs in your SDK version, fix it here.
//
// Assumptions, each marked ASSUMED below, that nothing here has verified:
//   A1. Options has string fields deviceName/subgraphName/modelPath, an int
//       executeMode, and extOptions is a map from string to a type-erased
//       value that accepts uint8_t*, size_t, std::string and bool.
//   A2. Model's constructor may throw std::exception; good() reports failure
//       that did not throw.
//   A3. getIOTensors(kind, false) lists the graph's tensors with name, byte
//       size and shape (unsigned dims) in the order forward() expects.
//   A4. forward() reads inputs and writes the preallocated outputs before it
//       returns (synchronous), and does not keep the pointers afterwards.
//   A5. Tensor element type: the metadata seen so far carries no dtype field,
//       so the dtype is inferred from size / numel, among the dtypes the
//       bridge's FlexMLRT runtime takes: kFlexMLRTDTypes in runtime.h, today
//       float32 only (the type string the seed passes), published as
//       build_info()["flexmlrt_dtypes"]. A graph with other dtypes is refused
//       at load; exporters (vllm.vision_npu.export) emit only those dtypes.
//       forward() is told the type in numpy's spelling (type_string below).
//   A6. The fbs_buffer must stay mapped for the life of the Model. The bridge
//       maps it private/copy-on-write, so a write by the SDK cannot reach the
//       file. FlexMLRT's own thread-safety is unknown: the bridge never calls
//       one Model from two threads at once (Session mutex).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#if defined(FXB_FLEXMLRT_SDK)
#include <FlexMLClient.h>
#else
#include <any>
#include <map>

// ============================================================ Section A
// Stand-in declarations (type-check build only; never linked).
namespace flexmlrt::client {

struct Options {                                  // ASSUMED (A1)
  std::string modelPath;
  std::string deviceName;
  std::string subgraphName;
  int executeMode = 0;
  bool debug = false;
  std::map<std::string, std::any> extOptions;
};

struct ErtIoTypeNew {                             // fields as the seed fills them
  std::string name;
  int idx = 0;
  void* data = nullptr;
  std::size_t size = 0;
  std::string type;
  std::vector<std::int64_t> shape;
};

struct ErtTensorMetadata {                        // ASSUMED (A3): name, size, shape
  std::string name;
  std::size_t size = 0;
  std::vector<std::uint32_t> shape;
};

struct ErtTensorType {
  void* data = nullptr;
  const ErtTensorMetadata& getMetadata() const;
};

class Model {
 public:
  explicit Model(const Options& options);        // ASSUMED (A2): may throw
  ~Model();
  bool good() const;
  std::vector<ErtTensorType> getIOTensors(const std::string& kind, bool flag);
  void forward(std::vector<ErtIoTypeNew>& ifms, std::vector<ErtIoTypeNew>& ofms,
               std::vector<ErtIoTypeNew>& wts);
};

}  // namespace flexmlrt::client
#endif

// ============================================================ Section B
// The shim: the only code that calls the SDK.
namespace fxb::sdk {

using Model = flexmlrt::client::Model;

struct IoInfo {                // one graph tensor as the SDK reports it
  std::string name;
  std::vector<std::int64_t> shape;
  std::size_t nbytes = 0;
};

struct IoBinding {             // one buffer handed to forward()
  std::string name;
  int index = 0;
  void* data = nullptr;
  std::size_t nbytes = 0;
  std::vector<std::int64_t> shape;
  std::string dtype;           // from type_string
};

// The type string forward() wants for a tensor of the bridge's dtype
// `numpy_name` ("float32", ...): numpy's spelling, as the seed passes it (A5).
inline std::string type_string(const char* numpy_name) { return numpy_name; }

inline std::unique_ptr<Model> open_model(std::uint8_t* rai, std::size_t rai_size,
                                         const std::string& model_path,
                                         const std::string& device,
                                         const std::string& subgraph,
                                         const std::string& cache_dir, int execute_mode) {
  flexmlrt::client::Options opts;                        // A1
  opts.modelPath = model_path;
  opts.deviceName = device;
  opts.subgraphName = subgraph;
  opts.executeMode = execute_mode;
  opts.extOptions["fbs_buffer"] = rai;                   // uint8_t*, as the seed
  opts.extOptions["fbs_buffer_size"] = rai_size;         // size_t
  opts.extOptions["cache_dir"] = cache_dir;              // std::string
  auto model = std::make_unique<Model>(opts);            // A2: may throw
  if (!model->good()) return nullptr;
  return model;
}

inline std::vector<IoInfo> list_io(Model& model, bool inputs) {
  std::vector<IoInfo> out;
  for (const auto& t : model.getIOTensors(inputs ? "input" : "output", false)) {  // A3
    const auto& meta = t.getMetadata();
    IoInfo info;
    info.name = meta.name;
    info.nbytes = static_cast<std::size_t>(meta.size);
    for (auto d : meta.shape) info.shape.push_back(static_cast<std::int64_t>(d));
    out.push_back(std::move(info));
  }
  return out;
}

inline void forward(Model& model, const std::vector<IoBinding>& in,
                    const std::vector<IoBinding>& out) {
  auto convert = [](const std::vector<IoBinding>& bs) {
    std::vector<flexmlrt::client::ErtIoTypeNew> v;
    for (const auto& b : bs) {
      flexmlrt::client::ErtIoTypeNew io;
      io.name = b.name;
      io.idx = b.index;
      io.data = b.data;
      io.size = b.nbytes;
      io.type = b.dtype;
      io.shape = b.shape;
      v.push_back(std::move(io));
    }
    return v;
  };
  auto ifms = convert(in);
  auto ofms = convert(out);
  std::vector<flexmlrt::client::ErtIoTypeNew> wts;  // weights live in the .rai
  model.forward(ifms, ofms, wts);                    // A4: synchronous
}

}  // namespace fxb::sdk
