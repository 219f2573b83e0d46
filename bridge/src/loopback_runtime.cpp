// Loopback runtime: the stand-in for the NPU. It reads a small self-describing
// bundle straight from the memory map (weights are used in place, never
// copied) and computes something deterministic, so every mechanism of the
// bridge (mapping, specs, validation, zero-copy inputs, reused outputs, GIL
// release, threading) runs for real without the SDK.
//
// Bundle format, version 1, all integers little-endian:
//
//   offset  type        field
//   0       char[8]     magic "FXBLOOP\0"
//   8       u32         version = 1
//   12      u32         op: 0 = affine, 1 = noop, 2 = rows_affine (see below)
//   16      u32         delay_us: the runtime sleeps this long in every run
//   20      u32         n_inputs  (1..16; affine: 1)
//   24      u32         n_outputs (1..16; affine and rows_affine: 1)
//   28      specs       n_inputs + n_outputs times:
//                         u32 name_len, name bytes (utf-8, no NUL),
//                         u32 dtype (runtime.h DType), u32 ndim, i64 dims[ndim]
//   ...     i64         K, the weight's row count      (rows_affine only)
//   ...     i64         N, the weight's column count   (rows_affine only)
//   ...     u64         weights_offset (multiple of 64, from the file start)
//   ...     u64         weights_nbytes
//   ...     zero padding up to weights_offset
//   w_off   f32[K*N]    w, row-major [K, N]      (affine, rows_affine)
//           f32[N]      b                        (affine, rows_affine)
//   end-4   u32         CRC-32 (zlib's) of every byte before it
//
// The ops:
//
//   affine (0)       one input [..., K] and one output [..., N] with the same
//                    leading dimensions, both float32: y = x.w + b over the
//                    last dimension (K and N come from the shapes).
//   noop (1)         any tensors of any dtypes; the outputs are left untouched.
//   rows_affine (2)  stands in for a graph with several inputs and one output
//                    (the vLLM vision tower's device graph), all float32, any
//                    shapes that fit: input 0 (numel M*K) is viewed as M rows
//                    of K, the output (numel M*N) as M rows of N, and every
//                    further input i (numel L_i) as M row chunks: element e
//                    belongs to row floor(e * M / L_i) (chunks of L_i / M
//                    elements when M divides L_i). Then
//                      y[m] = x0[m].w + b
//                      y[m][0] += sum of chunk m of input i, for i = 1, 2, ...
//                    K and N are stored in the header, M follows from input 0.
//
// Every count, size, shape and dtype is checked when the bundle is loaded;
// run() then only touches memory the checks vouched for. The Python writer
// is flexmlrt_bridge.loopback.write_loopback_bundle.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>

#include "runtime.h"

namespace fxb {
namespace {

constexpr char kMagic[8] = {'F', 'X', 'B', 'L', 'O', 'O', 'P', '\0'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kOpAffine = 0;
constexpr std::uint32_t kOpNoop = 1;
constexpr std::uint32_t kOpRowsAffine = 2;
constexpr std::uint32_t kMaxTensors = 16;
constexpr std::uint32_t kMaxNameLen = 1024;
constexpr std::uint32_t kMaxNdim = 8;
constexpr std::uint32_t kMaxDelayUs = 10'000'000;
constexpr std::int64_t kMaxNumel = std::int64_t{1} << 36;

// CRC-32 as zlib computes it (reflected, polynomial 0xEDB88320).
std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Bounds-checked little-endian reader over the mapped bytes.
class Reader {
 public:
  Reader(const MappedFile& f) : f_(f) {}

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.data() + pos_, sizeof(T));  // x86/arm64 are little-endian
    pos_ += sizeof(T);
    return v;
  }
  std::string read_str(std::size_t n, const char* what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(f_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  std::size_t pos() const { return pos_; }

 private:
  void need(std::size_t n, const char* what) {
    if (pos_ + n > f_.size()) {
      std::ostringstream os;
      os << "loopback bundle '" << f_.path() << "' is truncated: it ends at byte " << f_.size()
         << " while reading " << what << " at offset " << pos_;
      throw BundleError(os.str());
    }
  }
  const MappedFile& f_;
  std::size_t pos_ = 0;
};

[[noreturn]] void corrupt(const MappedFile& f, const std::string& why) {
  throw BundleError("loopback bundle '" + f.path() + "' is corrupt: " + why);
}

TensorSpec read_spec(Reader& r, const MappedFile& f, const char* role, std::uint32_t index) {
  TensorSpec s;
  auto name_len = r.read<std::uint32_t>("a tensor name length");
  if (name_len == 0 || name_len > kMaxNameLen) {
    corrupt(f, std::string(role) + " " + std::to_string(index) + " has a name length of " +
                   std::to_string(name_len) + " (allowed 1.." + std::to_string(kMaxNameLen) + ")");
  }
  s.name = r.read_str(name_len, "a tensor name");
  auto dtype = r.read<std::uint32_t>("a tensor dtype");
  if (!dtype_is_valid(dtype)) {
    corrupt(f, "tensor '" + s.name + "' has unknown dtype code " + std::to_string(dtype));
  }
  s.dtype = static_cast<DType>(dtype);
  auto ndim = r.read<std::uint32_t>("a tensor rank");
  if (ndim > kMaxNdim) {
    corrupt(f, "tensor '" + s.name + "' has rank " + std::to_string(ndim) + " (max " +
                   std::to_string(kMaxNdim) + ")");
  }
  std::int64_t numel = 1;
  for (std::uint32_t d = 0; d < ndim; ++d) {
    auto dim = r.read<std::int64_t>("a tensor dimension");
    if (dim < 1 || dim > kMaxNumel || numel * dim > kMaxNumel) {
      corrupt(f, "tensor '" + s.name + "' has an invalid dimension " + std::to_string(dim));
    }
    numel *= dim;
    s.shape.push_back(dim);
  }
  return s;
}

class LoopbackRuntime final : public Runtime {
 public:
  explicit LoopbackRuntime(std::shared_ptr<MappedFile> file) : file_(std::move(file)) {
    const MappedFile& f = *file_;
    Reader r(f);
    auto magic = r.read_str(sizeof(kMagic), "the magic");
    if (std::memcmp(magic.data(), kMagic, sizeof(kMagic)) != 0) {
      throw BundleError("'" + f.path() + "' is not a loopback bundle (bad magic)");
    }
    auto version = r.read<std::uint32_t>("the version");
    if (version != kVersion) {
      throw BundleError("loopback bundle '" + f.path() + "' has version " +
                        std::to_string(version) + "; this build reads version " +
                        std::to_string(kVersion));
    }
    op_ = r.read<std::uint32_t>("the op");
    if (op_ != kOpAffine && op_ != kOpNoop && op_ != kOpRowsAffine) {
      corrupt(f, "unknown op " + std::to_string(op_));
    }
    delay_us_ = r.read<std::uint32_t>("the delay");
    if (delay_us_ > kMaxDelayUs) corrupt(f, "delay_us " + std::to_string(delay_us_) + " > 10 s");
    auto n_in = r.read<std::uint32_t>("the input count");
    auto n_out = r.read<std::uint32_t>("the output count");
    if (n_in < 1 || n_in > kMaxTensors || n_out < 1 || n_out > kMaxTensors) {
      corrupt(f, "tensor counts " + std::to_string(n_in) + " in / " + std::to_string(n_out) +
                     " out are outside 1.." + std::to_string(kMaxTensors));
    }
    for (std::uint32_t i = 0; i < n_in; ++i) inputs_.push_back(read_spec(r, f, "input", i));
    for (std::uint32_t i = 0; i < n_out; ++i) outputs_.push_back(read_spec(r, f, "output", i));
    std::int64_t weight_rows = 0, weight_cols = 0;
    if (op_ == kOpRowsAffine) {
      weight_rows = r.read<std::int64_t>("the weight's row count");
      weight_cols = r.read<std::int64_t>("the weight's column count");
    }
    auto w_off = r.read<std::uint64_t>("the weights offset");
    auto w_len = r.read<std::uint64_t>("the weights size");
    if (w_off % 64 != 0 || w_off < r.pos()) {
      corrupt(f, "weights offset " + std::to_string(w_off) + " is not 64-aligned after the header");
    }
    if (w_len > f.size() || w_off > f.size() || w_off + w_len + 4 > f.size()) {
      std::ostringstream os;
      os << "loopback bundle '" << f.path() << "' is truncated: the weights end at byte "
         << (w_off + w_len) << " plus a 4-byte checksum, but the file has " << f.size()
         << " bytes";
      throw BundleError(os.str());
    }
    if (w_off + w_len + 4 != f.size()) {
      corrupt(f, std::to_string(f.size() - (w_off + w_len + 4)) + " unexpected trailing bytes");
    }
    std::uint32_t stored;
    std::memcpy(&stored, f.data() + f.size() - 4, 4);
    if (crc32(f.data(), f.size() - 4) != stored) corrupt(f, "CRC-32 checksum mismatch");

    if (op_ == kOpAffine) check_affine(f, w_len);
    if (op_ == kOpRowsAffine) check_rows_affine(f, w_len, weight_rows, weight_cols);
    weights_ = reinterpret_cast<const float*>(f.data() + w_off);  // used in place
  }

  const char* kind() const override { return "loopback"; }
  const std::vector<TensorSpec>& inputs() const override { return inputs_; }
  const std::vector<TensorSpec>& outputs() const override { return outputs_; }

  void run(const std::vector<const void*>& in, const std::vector<void*>& out) override {
    if (delay_us_) std::this_thread::sleep_for(std::chrono::microseconds(delay_us_));
    if (op_ == kOpNoop) return;
    const auto* x = static_cast<const float*>(in[0]);
    auto* y = static_cast<float*>(out[0]);
    const float* w = weights_;
    const float* b = weights_ + k_ * n_;
    for (std::size_t m = 0; m < m_; ++m) {
      float* yr = y + m * n_;
      const float* xr = x + m * k_;
      for (std::size_t j = 0; j < n_; ++j) yr[j] = b[j];
      for (std::size_t i = 0; i < k_; ++i) {
        const float xv = xr[i];
        const float* wr = w + i * n_;
        for (std::size_t j = 0; j < n_; ++j) yr[j] += xv * wr[j];
      }
    }
    if (op_ != kOpRowsAffine) return;
    std::vector<double> sums(m_);
    for (std::size_t i = 1; i < in.size(); ++i) {
      const auto* xi = static_cast<const float*>(in[i]);
      const std::uint64_t numel = chunks_[i];
      std::fill(sums.begin(), sums.end(), 0.0);
      for (std::uint64_t e = 0; e < numel; ++e) sums[(e * m_) / numel] += xi[e];
      for (std::size_t m = 0; m < m_; ++m) y[m * n_] += static_cast<float>(sums[m]);
    }
  }

 private:
  void check_affine(const MappedFile& f, std::uint64_t w_len) {
    if (inputs_.size() != 1 || outputs_.size() != 1) {
      corrupt(f, "the affine op takes exactly one input and one output");
    }
    const TensorSpec& xi = inputs_[0];
    const TensorSpec& yo = outputs_[0];
    if (xi.dtype != DType::float32 || yo.dtype != DType::float32) {
      corrupt(f, "the affine op needs float32 tensors");
    }
    if (xi.shape.empty() || xi.shape.size() != yo.shape.size() ||
        !std::equal(xi.shape.begin(), xi.shape.end() - 1, yo.shape.begin())) {
      corrupt(f, "affine shapes " + shape_str(xi.shape) + " -> " + shape_str(yo.shape) +
                     " must share all but the last dimension");
    }
    k_ = static_cast<std::size_t>(xi.shape.back());
    n_ = static_cast<std::size_t>(yo.shape.back());
    m_ = xi.numel() / k_;
    if (w_len != 4 * (k_ * n_ + n_)) {
      corrupt(f, "weights hold " + std::to_string(w_len) + " bytes, the affine op needs " +
                     std::to_string(4 * (k_ * n_ + n_)));
    }
  }

  void check_rows_affine(const MappedFile& f, std::uint64_t w_len, std::int64_t k,
                         std::int64_t n) {
    if (outputs_.size() != 1) {
      corrupt(f, "the rows_affine op takes exactly one output, the bundle has " +
                     std::to_string(outputs_.size()));
    }
    auto float32_only = [&](const std::vector<TensorSpec>& specs, const char* role) {
      for (const auto& s : specs) {
        if (s.dtype != DType::float32) {
          corrupt(f, std::string("the rows_affine op needs float32 tensors; ") + role + " '" +
                         s.name + "' is " + dtype_name(s.dtype));
        }
      }
    };
    float32_only(inputs_, "input");
    float32_only(outputs_, "output");
    if (k < 1 || n < 1 || k > kMaxNumel || n > kMaxNumel || k > kMaxNumel / n) {
      corrupt(f, "the rows_affine weight shape [" + std::to_string(k) + ", " +
                     std::to_string(n) + "] is invalid");
    }
    k_ = static_cast<std::size_t>(k);
    n_ = static_cast<std::size_t>(n);
    const TensorSpec& x0 = inputs_[0];
    if (x0.numel() % k_ != 0) {
      corrupt(f, "rows_affine input '" + x0.name + "' " + shape_str(x0.shape) + " has " +
                     std::to_string(x0.numel()) + " elements, not a whole number of rows of " +
                     std::to_string(k_) + " (the weight's row count)");
    }
    m_ = x0.numel() / k_;
    const TensorSpec& y = outputs_[0];
    if (y.numel() != m_ * n_) {
      corrupt(f, "rows_affine output '" + y.name + "' " + shape_str(y.shape) + " has " +
                     std::to_string(y.numel()) + " elements; " + std::to_string(m_) +
                     " rows of " + std::to_string(n_) + " need " + std::to_string(m_ * n_));
    }
    chunks_.assign(inputs_.size(), 0);
    for (std::size_t i = 1; i < inputs_.size(); ++i) {
      chunks_[i] = inputs_[i].numel();  // (e * M) / numel fits: both < 2**36
    }
    if (w_len != 4 * (k_ * n_ + n_)) {
      corrupt(f, "weights hold " + std::to_string(w_len) + " bytes, the rows_affine op with a [" +
                     std::to_string(k_) + ", " + std::to_string(n_) + "] weight needs " +
                     std::to_string(4 * (k_ * n_ + n_)));
    }
  }

  std::shared_ptr<MappedFile> file_;  // keeps weights_ mapped
  std::vector<TensorSpec> inputs_, outputs_;
  std::uint32_t op_ = kOpAffine;
  std::uint32_t delay_us_ = 0;
  std::size_t m_ = 0, k_ = 0, n_ = 0;
  std::vector<std::size_t> chunks_;  // rows_affine: element count of input i (i >= 1)
  const float* weights_ = nullptr;
};

}  // namespace

std::vector<std::string> loopback_ops() {
  std::vector<std::string> ops(3);
  ops[kOpAffine] = "affine";
  ops[kOpNoop] = "noop";
  ops[kOpRowsAffine] = "rows_affine";
  return ops;
}

bool is_loopback_bundle(const MappedFile& file) {
  return file.size() >= sizeof(kMagic) && std::memcmp(file.data(), kMagic, sizeof(kMagic)) == 0;
}

std::unique_ptr<Runtime> make_loopback_runtime(std::shared_ptr<MappedFile> file) {
  return std::make_unique<LoopbackRuntime>(std::move(file));
}

}  // namespace fxb
