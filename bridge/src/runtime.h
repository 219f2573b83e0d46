// The runtime interface of the bridge: a model loaded from a memory-mapped
// bundle, its input/output tensor specs, and a run over caller-owned buffers.
//
// Nothing here includes Python or pybind11: the interface and both
// implementations (loopback_runtime.cpp, flexmlrt_runtime.cpp) are plain C++17.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace fxb {

// ---------------------------------------------------------------- errors
// Each maps to one Python exception type in module.cpp.
struct BridgeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The bundle is missing pieces, truncated, corrupt or not understood.
struct BundleError : BridgeError {
  using BridgeError::BridgeError;
};
// A tensor handed to run() does not match its spec (shape, dtype, layout, name).
struct TensorError : BridgeError {
  using BridgeError::BridgeError;
};
// The requested runtime is not compiled into this build.
struct UnavailableError : BridgeError {
  using BridgeError::BridgeError;
};
// The operating system refused to open or map a file (carries errno).
struct FileError : BridgeError {
  FileError(int err, std::string path, const std::string& what)
      : BridgeError(what), error_number(err), filename(std::move(path)) {}
  int error_number;
  std::string filename;
};

// ---------------------------------------------------------------- tensors
enum class DType : std::uint32_t {
  float32 = 1,
  float16 = 2,
  int8 = 3,
  uint8 = 4,
  int32 = 5,
  int64 = 6,
};

bool dtype_is_valid(std::uint32_t code);
const char* dtype_name(DType t);  // numpy spelling: "float32", ...

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float16: return 2;
    case DType::int8: return 1;
    case DType::uint8: return 1;
    case DType::int32: return 4;
    case DType::int64: return 8;
  }
  return 0;
}

// The dtypes the FlexMLRT runtime takes: the one list the bridge keeps of
// them. flexmlrt_runtime.cpp gives each SDK tensor the dtype of this list
// whose element size it has (no dtype field is known in the SDK's metadata,
// assumption A5 in flexmlrt_assumptions.h), so no two entries may share an
// element size (checked at compile time there). Published to Python as
// build_info()["flexmlrt_dtypes"]; exporters check their graphs against it.
inline constexpr std::array<DType, 1> kFlexMLRTDTypes = {DType::float32};

struct TensorSpec {
  std::string name;
  DType dtype = DType::float32;
  std::vector<std::int64_t> shape;

  std::size_t numel() const;
  std::size_t nbytes() const { return numel() * dtype_size(dtype); }
};

std::string shape_str(const std::vector<std::int64_t>& shape);

// ---------------------------------------------------------------- bundle file
// A whole file mapped into memory, private and copy-on-write: the file on disk
// is never modified, and a runtime that scribbles on its buffer only touches
// its own pages. Unmapped when the last owner lets go.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, std::uint8_t* data, std::size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  std::uint8_t* data_;
  std::size_t size_;
};

// ---------------------------------------------------------------- runtime
struct RuntimeOptions {
  std::string device = "stx";             // XRT device name (FlexMLRT)
  std::string subgraph = "vaiml_par_0";   // subgraph inside the .rai (FlexMLRT)
  std::string cache_dir;                  // empty: the bundle's directory (FlexMLRT)
  int execute_mode = 2;                   // FlexMLRT execute mode
};

class Runtime {
 public:
  virtual ~Runtime() = default;
  virtual const char* kind() const = 0;
  virtual const std::vector<TensorSpec>& inputs() const = 0;
  virtual const std::vector<TensorSpec>& outputs() const = 0;

  // One inference. `in[i]` / `out[i]` point at buffers of exactly
  // inputs()[i].nbytes() / outputs()[i].nbytes(), C-contiguous, already
  // validated by the caller. Called WITHOUT the Python GIL. Not reentrant on
  // one instance: the Session serialises calls with its mutex.
  virtual void run(const std::vector<const void*>& in, const std::vector<void*>& out) = 0;
};

// Loopback: a tiny self-describing bundle (see loopback_runtime.cpp for the
// format); the stand-in for the NPU in every test.
bool is_loopback_bundle(const MappedFile& file);
std::vector<std::string> loopback_ops();  // op names, indexed by op code
std::unique_ptr<Runtime> make_loopback_runtime(std::shared_ptr<MappedFile> file);

// FlexMLRT: defined in flexmlrt_runtime.cpp when the SDK was found at build
// time; otherwise a stub that throws UnavailableError with rebuild advice.
bool flexmlrt_available();
std::unique_ptr<Runtime> make_flexmlrt_runtime(std::shared_ptr<MappedFile> file,
                                               const RuntimeOptions& options);

}  // namespace fxb
