// Python bindings: flexmlrt_bridge._core.
//
// A Session owns one runtime, the memory map of its bundle, and one
// preallocated buffer per output. run() validates the caller's buffers (taken
// through the buffer protocol, never copied), releases the GIL, takes the
// session mutex and calls the runtime with the caller's own pointers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>

#include "runtime.h"

namespace py = pybind11;
using namespace fxb;

#ifndef FXB_VERSION
#define FXB_VERSION "0.0.0"
#endif
#ifndef FXB_FLEXMLRT_ROOT
#define FXB_FLEXMLRT_ROOT ""
#endif

namespace {

PyObject* g_bridge_error = nullptr;
PyObject* g_bundle_error = nullptr;
PyObject* g_tensor_error = nullptr;
PyObject* g_unavailable_error = nullptr;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ------------------------------------------------------------ buffer checks
std::optional<DType> dtype_from_format(std::string fmt, py::ssize_t itemsize) {
  if (!fmt.empty() && (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@')) fmt.erase(0, 1);
  if (fmt.size() != 1) return std::nullopt;
  switch (fmt[0]) {
    case 'f': if (itemsize == 4) return DType::float32; break;
    case 'e': if (itemsize == 2) return DType::float16; break;
    case 'b': if (itemsize == 1) return DType::int8; break;
    case 'B': if (itemsize == 1) return DType::uint8; break;
    case 'h': case 'i': case 'l': case 'q':
      if (itemsize == 4) return DType::int32;
      if (itemsize == 8) return DType::int64;
      break;
    default: break;
  }
  return std::nullopt;
}

std::string describe_dtype(const py::handle& obj, const py::buffer_info& b) {
  if (py::hasattr(obj, "dtype")) return py::str(obj.attr("dtype"));
  std::ostringstream os;
  os << "buffer format '" << b.format << "' (itemsize " << b.itemsize << ")";
  return os.str();
}

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__qualname__"));
}

void check_buffer(const TensorSpec& s, const py::handle& obj, const py::buffer_info& b,
                  const char* role) {
  auto got = dtype_from_format(b.format, b.itemsize);
  if (!got || *got != s.dtype) {
    throw TensorError(std::string(role) + " '" + s.name + "' has dtype " +
                      describe_dtype(obj, b) + ", expected " + dtype_name(s.dtype) +
                      " (the bridge does not convert dtypes)");
  }
  std::vector<std::int64_t> shape(b.shape.begin(), b.shape.end());
  if (shape != s.shape) {
    throw TensorError(std::string(role) + " '" + s.name + "' has shape " + shape_str(shape) +
                      ", expected " + shape_str(s.shape));
  }
  py::ssize_t expect = b.itemsize;
  for (py::ssize_t d = b.ndim - 1; d >= 0; --d) {
    if (b.shape[d] != 1 && b.strides[d] != expect) {
      std::vector<std::int64_t> strides(b.strides.begin(), b.strides.end());
      throw TensorError(std::string(role) + " '" + s.name +
                        "' is not C-contiguous (byte strides " + shape_str(strides) +
                        "); the bridge never copies: pass np.ascontiguousarray(x) or "
                        "tensor.contiguous()");
    }
    expect *= b.shape[d];
  }
}

std::string names_of(const std::vector<TensorSpec>& specs) {
  std::string out;
  for (const auto& s : specs) out += (out.empty() ? "'" : ", '") + s.name + "'";
  return out;
}

// Matches caller objects to specs: a dict {name: buffer}, or one buffer when
// the model has exactly one tensor of this role.
std::vector<py::object> match(const std::vector<TensorSpec>& specs, const py::object& given,
                              const char* role) {
  std::vector<py::object> objs(specs.size());
  if (!py::isinstance<py::dict>(given)) {
    if (specs.size() != 1) {
      throw TensorError("this model has " + std::to_string(specs.size()) + " " + role +
                        "s (" + names_of(specs) + "): pass a dict {name: array}");
    }
    objs[0] = given;
    return objs;
  }
  for (auto item : py::reinterpret_borrow<py::dict>(given)) {
    std::string key = py::isinstance<py::str>(item.first) ? item.first.cast<std::string>()
                                                          : std::string(py::repr(item.first));
    std::size_t i = 0;
    while (i < specs.size() && specs[i].name != key) ++i;
    if (i == specs.size()) {
      throw TensorError("unknown " + std::string(role) + " tensor '" + key +
                        "'; this model's " + role + "s are: " + names_of(specs));
    }
    objs[i] = py::reinterpret_borrow<py::object>(item.second);
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (!objs[i]) {
      throw TensorError("missing " + std::string(role) + " '" + specs[i].name + "' (" +
                        dtype_name(specs[i].dtype) + " " + shape_str(specs[i].shape) + ")");
    }
  }
  return objs;
}

py::buffer_info request(const TensorSpec& s, const py::object& obj, const char* role,
                        bool writable) {
  if (!PyObject_CheckBuffer(obj.ptr())) {
    throw TensorError(std::string(role) + " '" + s.name +
                      "' must support the buffer protocol (a numpy array; torch CPU "
                      "tensors go through flexmlrt_bridge.Session), got " + type_name(obj));
  }
  try {
    return py::reinterpret_borrow<py::buffer>(obj).request(writable);
  } catch (py::error_already_set& e) {
    throw TensorError(std::string(role) + " '" + s.name + "' cannot be used" +
                      (writable ? " as an output (it must be writable)" : "") + ": " +
                      e.what());
  } catch (const std::exception& e) {
    throw TensorError(std::string(role) + " '" + s.name + "' cannot be used" +
                      (writable ? " as an output (it must be writable)" : "") + ": " +
                      e.what());
  }
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// ------------------------------------------------------------ session
class Session {
 public:
  Session(const std::string& path, const std::string& runtime, const RuntimeOptions& opt)
      : path_(path) {
    if (runtime != "auto" && runtime != "loopback" && runtime != "flexmlrt") {
      throw py::value_error("runtime must be 'auto', 'loopback' or 'flexmlrt', got '" +
                            runtime + "'");
    }
    {
      py::gil_scoped_release nogil;  // FlexMLRT loads can take seconds
      auto file = MappedFile::open(path);
      bytes_ = file->size();
      bool loopback = runtime == "loopback" || (runtime == "auto" && is_loopback_bundle(*file));
      rt_ = loopback ? make_loopback_runtime(file) : make_flexmlrt_runtime(file, opt);
    }
    for (const auto& s : rt_->outputs()) {
      std::size_t n = (s.nbytes() + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, n ? n : 64);
      if (!p) throw std::bad_alloc();
      std::memset(p, 0, n);
      out_bufs_.emplace_back(p);
    }
    kind_ = rt_->kind();
    inputs_ = rt_->inputs();
    outputs_ = rt_->outputs();
  }

  py::dict run(const py::object& inputs, const py::object& outputs) {
    // GIL held: validate everything, keep the buffer views alive.
    std::vector<py::object> in_objs = match(inputs_, inputs, "input");
    std::vector<py::buffer_info> views;
    std::vector<const void*> in_ptrs;
    for (std::size_t i = 0; i < inputs_.size(); ++i) {
      views.push_back(request(inputs_[i], in_objs[i], "input", false));
      check_buffer(inputs_[i], in_objs[i], views.back(), "input");
      in_ptrs.push_back(views.back().ptr);
    }
    std::vector<py::object> out_objs;
    std::vector<void*> out_ptrs;
    if (outputs.is_none()) {
      for (auto& b : out_bufs_) out_ptrs.push_back(b.get());
    } else {
      out_objs = match(outputs_, outputs, "output");
      for (std::size_t i = 0; i < outputs_.size(); ++i) {
        views.push_back(request(outputs_[i], out_objs[i], "output", true));
        check_buffer(outputs_[i], out_objs[i], views.back(), "output");
        out_ptrs.push_back(views.back().ptr);
      }
    }
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);  // taken without the GIL: no deadlock
      if (!rt_) throw BridgeError("session for '" + path_ + "' is closed");
      last_in_ = in_ptrs;
      last_out_ = out_ptrs;
      std::int64_t t0 = now_ns();
      rt_->run(in_ptrs, out_ptrs);
      window_ = {t0, now_ns()};
      ++runs_;
    }
    py::dict result;
    py::object self = py::cast(this);  // the arrays keep the session alive
    for (std::size_t i = 0; i < outputs_.size(); ++i) {
      const auto& s = outputs_[i];
      if (outputs.is_none()) {
        result[py::str(s.name)] = py::array(py::dtype(dtype_name(s.dtype)), s.shape,
                                            out_bufs_[i].get(), self);
      } else {
        result[py::str(s.name)] = out_objs[i];
      }
    }
    return result;
  }

  void close() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    rt_.reset();  // drops the runtime and, with it, the memory map
  }

  bool closed() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    return !rt_;
  }

  py::dict last_io_addresses() {
    std::vector<const void*> in;
    std::vector<void*> out;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      in = last_in_;
      out = last_out_;
    }
    py::dict ins, outs, res;
    for (std::size_t i = 0; i < in.size(); ++i)
      ins[py::str(inputs_[i].name)] = reinterpret_cast<std::uintptr_t>(in[i]);
    for (std::size_t i = 0; i < out.size(); ++i)
      outs[py::str(outputs_[i].name)] = reinterpret_cast<std::uintptr_t>(out[i]);
    res["inputs"] = ins;
    res["outputs"] = outs;
    return res;
  }

  py::tuple last_run_window_ns() {
    std::pair<std::int64_t, std::int64_t> w;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      w = window_;
    }
    return py::make_tuple(w.first, w.second);
  }

  std::uint64_t run_count() {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }

  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  const std::string& runtime() const { return kind_; }
  const std::string& path() const { return path_; }
  std::size_t bundle_nbytes() const { return bytes_; }

 private:
  std::string path_;
  std::string kind_;
  std::size_t bytes_ = 0;
  std::unique_ptr<Runtime> rt_;
  std::vector<TensorSpec> inputs_, outputs_;
  std::vector<std::unique_ptr<void, FreeDeleter>> out_bufs_;
  std::mutex mu_;
  std::vector<const void*> last_in_;
  std::vector<void*> last_out_;
  std::pair<std::int64_t, std::int64_t> window_{0, 0};
  std::uint64_t runs_ = 0;
};

PyObject* new_error(const char* name, PyObject* base, const char* doc) {
  PyObject* e = PyErr_NewExceptionWithDoc(name, doc, base, nullptr);
  if (!e) throw py::error_already_set();
  return e;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "flexmlrt_bridge native core (see flexmlrt_bridge for the documented API)";

  g_bridge_error = new_error("flexmlrt_bridge.BridgeError", PyExc_RuntimeError,
                             "Base class of every error the bridge raises.");
  g_bundle_error = new_error("flexmlrt_bridge.BundleError", g_bridge_error,
                             "The bundle is truncated, corrupt or not understood.");
  py::tuple tensor_bases = py::make_tuple(py::handle(g_bridge_error), py::handle(PyExc_ValueError));
  g_tensor_error = new_error("flexmlrt_bridge.TensorError", tensor_bases.ptr(),
                             "A tensor does not match its spec (name, shape, dtype, layout).");
  g_unavailable_error =
      new_error("flexmlrt_bridge.RuntimeUnavailableError", g_bridge_error,
                "The requested runtime is not compiled into this build.");
  m.attr("BridgeError") = py::handle(g_bridge_error);
  m.attr("BundleError") = py::handle(g_bundle_error);
  m.attr("TensorError") = py::handle(g_tensor_error);
  m.attr("RuntimeUnavailableError") = py::handle(g_unavailable_error);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const FileError& e) {
      py::tuple args = py::make_tuple(e.error_number, e.what(), e.filename);
      PyErr_SetObject(PyExc_OSError, args.ptr());  // becomes FileNotFoundError etc.
    } catch (const TensorError& e) {
      PyErr_SetString(g_tensor_error, e.what());
    } catch (const BundleError& e) {
      PyErr_SetString(g_bundle_error, e.what());
    } catch (const UnavailableError& e) {
      PyErr_SetString(g_unavailable_error, e.what());
    } catch (const BridgeError& e) {
      PyErr_SetString(g_bridge_error, e.what());
    }
  });

  py::class_<TensorSpec>(m, "TensorSpec", "Name, dtype and shape of one model tensor.")
      .def_readonly("name", &TensorSpec::name)
      .def_property_readonly("dtype", [](const TensorSpec& s) { return dtype_name(s.dtype); })
      .def_property_readonly("shape",
                             [](const TensorSpec& s) {
                               py::tuple t(s.shape.size());
                               for (std::size_t i = 0; i < s.shape.size(); ++i) t[i] = s.shape[i];
                               return t;
                             })
      .def_property_readonly("nbytes", &TensorSpec::nbytes)
      .def("__repr__", [](const TensorSpec& s) {
        return "TensorSpec(name='" + s.name + "', dtype='" + dtype_name(s.dtype) +
               "', shape=" + shape_str(s.shape) + ")";
      });

  py::class_<Session>(m, "Session")
      .def(py::init([](const std::string& path, const std::string& runtime,
                       const std::string& device, const std::string& subgraph,
                       const std::string& cache_dir, int execute_mode) {
             RuntimeOptions opt;
             opt.device = device;
             opt.subgraph = subgraph;
             opt.cache_dir = cache_dir;
             opt.execute_mode = execute_mode;
             return new Session(path, runtime, opt);
           }),
           py::arg("path"), py::arg("runtime") = "auto", py::arg("device") = "stx",
           py::arg("subgraph") = "vaiml_par_0", py::arg("cache_dir") = "",
           py::arg("execute_mode") = 2)
      .def("run", &Session::run, py::arg("inputs"), py::arg("outputs") = py::none())
      .def("close", &Session::close)
      .def_property_readonly("closed", &Session::closed)
      .def_property_readonly("inputs", &Session::inputs)
      .def_property_readonly("outputs", &Session::outputs)
      .def_property_readonly("runtime", &Session::runtime)
      .def_property_readonly("path", &Session::path)
      .def_property_readonly("bundle_nbytes", &Session::bundle_nbytes)
      .def_property_readonly("run_count", &Session::run_count)
      .def("last_io_addresses", &Session::last_io_addresses)
      .def("last_run_window_ns", &Session::last_run_window_ns);

  m.def("flexmlrt_available", &flexmlrt_available);
  m.def("build_info", [] {
    py::dict d;
    d["version"] = FXB_VERSION;
    d["flexmlrt"] = flexmlrt_available();
    d["flexmlrt_root"] = FXB_FLEXMLRT_ROOT;
#if defined(FXB_FLEXMLRT_TYPECHECKED)
    d["flexmlrt_typechecked"] = true;
#else
    d["flexmlrt_typechecked"] = false;
#endif
    // What the FlexMLRT runtime takes (kFlexMLRTDTypes), whether or not it is
    // compiled in: exporters and vllm.vision_npu check their graphs against it.
    py::tuple dtypes(kFlexMLRTDTypes.size());
    for (std::size_t i = 0; i < kFlexMLRTDTypes.size(); ++i) dtypes[i] = dtype_name(kFlexMLRTDTypes[i]);
    d["flexmlrt_dtypes"] = dtypes;
    d["loopback_format_version"] = 1;
    d["loopback_ops"] = py::tuple(py::cast(loopback_ops()));
    d["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." +
                    std::to_string(PYBIND11_VERSION_MINOR) + "." +
                    std::to_string(PYBIND11_VERSION_PATCH);
    return d;
  });
}
