// Shared pieces of the runtime interface: dtypes, specs, the mapped file, and
// the FlexMLRT stand-in used when the SDK was not found at build time.
#include "runtime.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>

namespace fxb {

bool dtype_is_valid(std::uint32_t code) { return code >= 1 && code <= 6; }

const char* dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float16: return "float16";
    case DType::int8: return "int8";
    case DType::uint8: return "uint8";
    case DType::int32: return "int32";
    case DType::int64: return "int64";
  }
  return "?";
}

std::size_t TensorSpec::numel() const {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    throw FileError(err, path, "cannot open bundle: " + std::string(std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw FileError(err, path, "cannot stat bundle: " + std::string(std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw FileError(EISDIR, path, "bundle path is a directory, expected a file");
  }
  if (st.st_size <= 0) {
    ::close(fd);
    throw BundleError("bundle '" + path + "' is empty (0 bytes)");
  }
  auto size = static_cast<std::size_t>(st.st_size);
  // MAP_PRIVATE + PROT_WRITE: copy-on-write, so the file is never modified
  // even if a runtime writes into the buffer it was given.
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping stays valid after close
  if (p == MAP_FAILED) {
    throw FileError(err, path, "cannot memory-map bundle: " + std::string(std::strerror(err)));
  }
  return std::shared_ptr<MappedFile>(new MappedFile(path, static_cast<std::uint8_t*>(p), size));
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

#if !defined(FXB_HAVE_FLEXMLRT)
bool flexmlrt_available() { return false; }

std::unique_ptr<Runtime> make_flexmlrt_runtime(std::shared_ptr<MappedFile> file,
                                               const RuntimeOptions&) {
  throw UnavailableError(
      "the FlexMLRT runtime is not compiled into this build of flexmlrt_bridge "
      "(CMake did not find the FlexMLRT SDK), so '" + file->path() +
      "' cannot be run on the NPU. Rebuild with the SDK: "
      "FLEXMLRT_ROOT=/path/to/flexmlrt pip install ./bridge "
      "(the directory holding include/FlexMLClient.h and the flexmlrt library); "
      "flexmlrt_bridge.build_info() shows what this build contains.");
}
#endif

}  // namespace fxb
