// The one file that knows about Python. Everything here converts arguments, releases
// the GIL around native work, and maps native failures to Python exceptions; the logic
// lives in the plain C++ folders beside this file.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "truncindex/truncindex.h"
// apply section
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <system_error>
#include <tuple>

#include "apply/apply.h"
#include "extract/path_error.h"
#include "tar/errors.h"
// format layer (digest / compress / tar / tarsplit)
#include "compress/compress.h"
#include "compress/decompress.h"
#include "digest/crc64.h"
#include "digest/sha256.h"
#include "tarsplit/assembler.h"
#include "tarsplit/disassembler.h"
#include "tarsplit/packer.h"
// changes section
#include <algorithm>
#include <thread>

#include "changes/changes.h"

namespace py = pybind11;
using layerstore::TruncIndex;

namespace {

// ---- truncindex ------------------------------------------------------------------
void bind_truncindex(py::module_& m) {
  py::class_<TruncIndex>(m, "TruncIndex")
      .def(py::init<>())
      .def(py::init<std::vector<std::string>>(), py::arg("ids"))
      .def("add",
           [](TruncIndex& self, const std::string& id) {
             switch (self.add(id)) {
               case TruncIndex::Status::kOk:
                 return;
               case TruncIndex::Status::kEmptyPrefix:
                 throw py::value_error("prefix can't be empty");
               case TruncIndex::Status::kIllegalChar:
                 throw py::value_error("illegal character: ' '");
               default:
                 throw py::value_error("id already exists: '" + id + "'");
             }
           })
      .def("delete",
           [](TruncIndex& self, const std::string& id) {
             if (self.remove(id) != TruncIndex::Status::kOk)
               throw py::key_error("no such id: '" + id + "'");
           })
      .def("get",
           [](const TruncIndex& self, const std::string& prefix) {
             std::string out;
             switch (self.get(prefix, &out)) {
               case TruncIndex::Status::kOk:
                 return out;
               case TruncIndex::Status::kEmptyPrefix:
                 throw py::value_error("prefix can't be empty");
               case TruncIndex::Status::kAmbiguous:
                 throw py::key_error("Multiple IDs found with provided prefix: " + out);
               default:
                 throw py::key_error("ID does not exist");
             }
           })
      .def("__contains__", &TruncIndex::contains)
      .def("__len__", &TruncIndex::size)
      .def("ids", &TruncIndex::ids);
}

// ---- digest / tar / tarsplit / extract / compress: added by their owners below ------

// ---- native failures -> Python exceptions ----------------------------------------------

// Raise the Python exception instance `exc` (GIL held).
[[noreturn]] void raise_py(const py::object& exc) {
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw py::error_already_set();
}

// f() with the GIL released. A native exception is handed, with the GIL held again, to
// `raise(exception_ptr)`, which throws the Python exception for it; types it does not
// catch propagate to pybind11 as they are.
template <class F, class Raise>
auto run_nogil(F&& f, Raise&& raise) -> decltype(f()) {
  std::exception_ptr err;
  decltype(f()) result{};
  {
    py::gil_scoped_release release;
    try {
      result = f();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) raise(err);
  return result;
}

// ---- format: digests, compression, tar-split assembly (digest/ compress/ tar/ tarsplit/) --
// Every call drops the GIL for the byte work, then maps native failures: ArchiveError ->
// InvalidArchive, ChecksumError -> ChecksumMismatch, FileError/system_error -> OSError.
[[noreturn]] void raise_format_error(const std::exception_ptr& e) {
  py::module_ errors = py::module_::import("layerstore.errors");
  py::object os_error = py::module_::import("builtins").attr("OSError");
  try {
    std::rethrow_exception(e);
  } catch (const layerstore::ChecksumError& x) {
    raise_py(errors.attr("ChecksumMismatch")("", py::arg("message") = std::string(x.what())));
  } catch (const layerstore::ArchiveError& x) {
    raise_py(errors.attr("InvalidArchive")("", py::arg("message") = std::string(x.what())));
  } catch (const layerstore::FileError& x) {
    int err = x.code().value();
    raise_py(os_error(err, std::strerror(err), py::bytes(x.path).attr("decode")(
                                                         "utf-8", "surrogateescape")));
  } catch (const std::system_error& x) {
    int err = x.code().value();
    raise_py(os_error(err, std::string(x.what())));
  }
}

template <class F>
auto format_nogil(F&& f) -> decltype(f()) {
  return run_nogil(std::forward<F>(f), raise_format_error);
}

layerstore::Compression to_compression(int c) {
  if (c < 0 || c > 4) throw py::value_error("unknown compression " + std::to_string(c));
  return static_cast<layerstore::Compression>(c);
}

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

void bind_format(py::module_& m) {
  m.def(
      "sha256",
      [](py::buffer b) {
        py::buffer_info info = b.request();
        const void* p = info.ptr;
        size_t n = static_cast<size_t>(info.size * info.itemsize);
        return format_nogil([&] { return layerstore::sha256_hex(p, n); });
      },
      py::arg("buffer"), "SHA-256 of a buffer as 64 lowercase hex digits (OpenSSL).");
  m.def(
      "crc64",
      [](py::buffer b) {
        py::buffer_info info = b.request();
        const void* p = info.ptr;
        size_t n = static_cast<size_t>(info.size * info.itemsize);
        return format_nogil([&] { return layerstore::crc64_iso_update(0, p, n); });
      },
      py::arg("buffer"), "Go's crc64.Checksum(buffer, ISO table): tar-split's file checksum.");
  m.def(
      "detect_compression",
      [](py::buffer b) {
        py::buffer_info info = b.request();
        return static_cast<int>(layerstore::detect_compression(
            static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size * info.itemsize)));
      },
      py::arg("buffer"), "Compression by magic number (0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd).");
  m.def(
      "compress_fd",
      [](int in_fd, int out_fd, int compression, int level, int threads) {
        layerstore::Compression c = to_compression(compression);
        return format_nogil([&]() -> uint64_t {
          layerstore::FdSource src(in_fd);
          layerstore::FdSink sink(out_fd);
          std::unique_ptr<layerstore::ByteSink> out =
              layerstore::make_compressing_sink(c, sink, level, threads);
          std::vector<uint8_t> buf(1 << 20);
          for (size_t r; (r = src.read(buf.data(), buf.size())) > 0;) out->write(buf.data(), r);
          out->close();
          return sink.bytes_written();
        });
      },
      py::arg("in_fd"), py::arg("out_fd"), py::arg("compression"), py::arg("level") = -1,
      py::arg("threads") = 0, "Compress in_fd to out_fd; returns the bytes written.");
  m.def(
      "decompress_fd",
      [](int in_fd, int out_fd, int compression) {
        if (compression != -1) to_compression(compression);
        return format_nogil([&]() -> uint64_t {
          layerstore::FdSource src(in_fd);
          layerstore::FdSink sink(out_fd);
          std::unique_ptr<layerstore::DecompressingSource> ds =
              compression == -1
                  ? std::make_unique<layerstore::DecompressingSource>(src)
                  : std::make_unique<layerstore::DecompressingSource>(
                        src, static_cast<layerstore::Compression>(compression));
          std::vector<uint8_t> buf(1 << 20);
          for (size_t r; (r = ds->read(buf.data(), buf.size())) > 0;) sink.write(buf.data(), r);
          return sink.bytes_written();
        });
      },
      py::arg("in_fd"), py::arg("out_fd"), py::arg("compression") = -1,
      "Decompress in_fd (detected when compression is -1) to out_fd; returns bytes written.");
  m.def(
      "assemble",
      [](const std::string& tarsplit_path, const std::vector<std::string>& roots, int out_fd,
         int compression, int level, int threads) {
        layerstore::Compression c = to_compression(compression);
        return format_nogil([&]() -> uint64_t {
          FdCloser in{::open(tarsplit_path.c_str(), O_RDONLY | O_CLOEXEC)};
          if (in.fd < 0) throw layerstore::FileError(errno, tarsplit_path);
          layerstore::FdSource src(in.fd);
          layerstore::RootsFileGetter files(roots);
          layerstore::FdSink sink(out_fd);
          std::unique_ptr<layerstore::ByteSink> out =
              layerstore::make_compressing_sink(c, sink, level, threads);
          // Compressed: `threads` compress and the files are read on this thread. Uncompressed:
          // `threads` read the files ahead (0: one per CPU) while this thread writes.
          const bool readers = c == layerstore::Compression::kNone;
          layerstore::assemble(src, files, *out, readers ? threads : 1);
          out->close();
          return sink.bytes_written();
        });
      },
      py::arg("tarsplit_path"), py::arg("roots"), py::arg("out_fd"), py::arg("compression"),
      py::arg("level") = -1, py::arg("threads") = 0,
      "Rebuild the layer tarball from <id>.tar-split.gz and the layer files; returns bytes "
      "written to out_fd.");
  m.def(
      "tarsplit_disassemble",
      [](int in_fd, int out_gz_fd) {
        format_nogil([&]() -> int {
          layerstore::FdSource src(in_fd);
          layerstore::FdSink sink(out_gz_fd);
          layerstore::TarSplitPacker packer(sink);
          layerstore::Disassembler d(src, packer);
          layerstore::TarHeader h;
          std::vector<uint8_t> buf(1 << 20);
          while (d.next(h))
            while (d.read(buf.data(), buf.size()) > 0) {
            }
          d.finish();
          packer.finish();
          return 0;
        });
      },
      py::arg("in_fd"), py::arg("out_gz_fd"),
      "Write the tar-split stream (gzip NDJSON) of the tar read from in_fd.");
}


// ---- apply: the layer apply pipeline (src/native/apply, src/native/extract) ---------
using IdTriple = std::tuple<int64_t, int64_t, int64_t>;

std::vector<layerstore::IdMapEntry> to_id_map(const std::vector<IdTriple>& triples) {
  std::vector<layerstore::IdMapEntry> out;
  for (const IdTriple& t : triples) {
    if (std::get<0>(t) < 0 || std::get<1>(t) < 0 || std::get<2>(t) <= 0)
      throw py::value_error("invalid ID map entry (container, host, size)");
    out.push_back(layerstore::IdMapEntry{std::get<0>(t), std::get<1>(t), std::get<2>(t)});
  }
  return out;
}

// With the GIL held: raise the Python exception for a native failure of apply_layer.
[[noreturn]] void raise_apply_error(const std::exception_ptr& e, const std::string& dest) {
  try {
    std::rethrow_exception(e);
  } catch (const layerstore::ArchiveError& x) {
    py::object cls = py::module_::import("layerstore.errors").attr("InvalidArchive");
    raise_py(cls("", py::arg("message") = std::string(x.what())));
  } catch (const layerstore::ChecksumError& x) {
    py::object cls = py::module_::import("layerstore.errors").attr("InvalidArchive");
    raise_py(cls("", py::arg("message") = std::string(x.what())));
  } catch (const layerstore::PathError& x) {
    std::string base = dest;
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    const std::string where = x.path == "/" ? base : base + x.path;
    py::object os_error = py::module_::import("builtins").attr("OSError");
    raise_py(os_error(x.err, x.op + ": " + std::strerror(x.err), where));
  } catch (const std::system_error& x) {
    py::object os_error = py::module_::import("builtins").attr("OSError");
    raise_py(os_error(x.code().value(), std::string(x.what())));
  }
}

// A contiguous read-only view of a buffer-protocol object; released with the GIL held.
struct BufferView {
  Py_buffer view{};
  bool held = false;
  explicit BufferView(const py::object& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_SIMPLE) != 0) throw py::error_already_set();
    held = true;
  }
  ~BufferView() {
    if (held) PyBuffer_Release(&view);
  }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
};

py::dict apply_layer_py(const py::object& source, const std::string& dest, int tarsplit_fd,
                        const std::vector<IdTriple>& uid_map,
                        const std::vector<IdTriple>& gid_map,
                        const std::string& whiteout_format,
                        const std::optional<std::string>& trusted_compressed_digest,
                        bool ignore_chown_errors, bool sync, bool hash_thread,
                        size_t block_size, bool write_behind) {
  layerstore::ApplyOptions options;
  if (whiteout_format == "vfs") {
    options.extract.whiteout_format = layerstore::WhiteoutFormat::kVfs;
  } else if (whiteout_format == "overlay") {
    options.extract.whiteout_format = layerstore::WhiteoutFormat::kOverlay;
  } else {
    throw py::value_error("whiteout_format must be \"vfs\" or \"overlay\", not \"" +
                          whiteout_format + "\"");
  }
  options.extract.uid_map = to_id_map(uid_map);
  options.extract.gid_map = to_id_map(gid_map);
  options.extract.ignore_chown_errors = ignore_chown_errors;
  options.extract.sync = sync;
  options.extract.write_behind = write_behind;
  options.trusted_compressed_digest = trusted_compressed_digest.value_or("");
  options.hash_thread = hash_thread;
  if (block_size < 64 * 1024 || block_size > (64u << 20))
    throw py::value_error("block_size must be between 64 KiB and 64 MiB");
  options.block_size = block_size;

  int source_fd = -1;
  std::unique_ptr<BufferView> buffer;
  if (py::isinstance<py::int_>(source)) {
    source_fd = source.cast<int>();
  } else {
    buffer = std::make_unique<BufferView>(source);
  }

  layerstore::ApplyResult res = run_nogil(
      [&] {
        int root = open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root < 0) throw layerstore::PathError("open", "/", errno);
        layerstore::FdSink tarsplit(tarsplit_fd);
        try {
          layerstore::ApplyResult r =
              buffer ? layerstore::apply_layer(static_cast<const uint8_t*>(buffer->view.buf),
                                               static_cast<size_t>(buffer->view.len), root,
                                               options, tarsplit)
                     : layerstore::apply_layer_fd(source_fd, root, options, tarsplit);
          close(root);
          return r;
        } catch (...) {
          close(root);
          throw;
        }
      },
      [&](const std::exception_ptr& e) { raise_apply_error(e, dest); });
  buffer.reset();

  py::dict out;
  out["compression"] = static_cast<int>(res.compression);
  out["compressed_digest"] = res.compressed_digest;
  out["compressed_size"] = res.compressed_size;
  out["uncompressed_digest"] = res.uncompressed_digest;
  out["uncompressed_size"] = res.uncompressed_size;
  out["uid_set"] = res.uid_set;
  out["gid_set"] = res.gid_set;
  out["size"] = res.size;
  return out;
}

void bind_apply(py::module_& m) {
  m.def("apply_layer", &apply_layer_py, py::arg("source"), py::arg("dest"), py::kw_only(),
        py::arg("tarsplit_fd"), py::arg("uid_map") = std::vector<IdTriple>{},
        py::arg("gid_map") = std::vector<IdTriple>{}, py::arg("whiteout_format") = "vfs",
        py::arg("trusted_compressed_digest") = py::none(),
        py::arg("ignore_chown_errors") = false, py::arg("sync") = true,
        py::arg("hash_thread") = true, py::arg("block_size") = size_t{1} << 20,
        py::arg("write_behind") = true,
        "Apply a layer tarball (fd or buffer) to the directory dest in one streaming, "
        "multi-threaded pass; the tar-split gzip stream goes to tarsplit_fd.");
}

// ---- changes: change lists, diff sizes and the naive diff (src/native/changes) -------
// Paths go in through os.fsencode and come out with surrogateescape, so non-UTF-8 names
// survive. PathError -> OSError with the path; a bad compression -> ValueError.

std::string changes_fs_path(const py::object& p) {
  return py::module_::import("os").attr("fsencode")(p).cast<std::string>();
}

struct ChangesArgs {
  std::string new_root;
  std::string old_root;  // empty: none
  std::vector<std::string> lowers;
  bool overlay = false;
  layerstore::IdMappings maps;
  layerstore::IdMappings parent_maps;
};

ChangesArgs changes_args(const py::object& new_root, const py::object& old_root,
                         const py::object& lower_roots, const std::string& mode,
                         const std::vector<IdTriple>& uid_map,
                         const std::vector<IdTriple>& gid_map,
                         const py::object& parent_uid_map, const py::object& parent_gid_map) {
  ChangesArgs a;
  if (mode != "naive" && mode != "overlay")
    throw py::value_error("mode must be \"naive\" or \"overlay\", not \"" + mode + "\"");
  a.overlay = mode == "overlay";
  a.new_root = changes_fs_path(new_root);
  if (!old_root.is_none()) a.old_root = changes_fs_path(old_root);
  if (a.new_root.empty()) throw py::value_error("new_root must not be empty");
  if (!lower_roots.is_none())
    for (const py::handle& h : lower_roots) a.lowers.push_back(changes_fs_path(py::reinterpret_borrow<py::object>(h)));
  a.maps.uids = to_id_map(uid_map);
  a.maps.gids = to_id_map(gid_map);
  a.parent_maps.uids = parent_uid_map.is_none()
                           ? a.maps.uids
                           : to_id_map(parent_uid_map.cast<std::vector<IdTriple>>());
  a.parent_maps.gids = parent_gid_map.is_none()
                           ? a.maps.gids
                           : to_id_map(parent_gid_map.cast<std::vector<IdTriple>>());
  return a;
}

std::vector<layerstore::Change> changes_compute(const ChangesArgs& a) {
  if (a.overlay) return layerstore::overlay_changes(a.new_root, a.lowers);
  return layerstore::naive_changes(a.new_root, a.maps, a.old_root, a.parent_maps);
}

// changes/diff_size/export: PathError -> OSError naming the path, ArchiveError ->
// ValueError, system_error -> OSError.
[[noreturn]] void raise_changes_error(const std::exception_ptr& e) {
  auto decode = [](const std::string& s) {
    return py::reinterpret_steal<py::object>(
        PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "surrogateescape"));
  };
  py::object os_error = py::module_::import("builtins").attr("OSError");
  try {
    std::rethrow_exception(e);
  } catch (const layerstore::PathError& x) {
    raise_py(os_error(x.err, x.op + ": " + std::strerror(x.err), decode(x.path)));
  } catch (const layerstore::ArchiveError& x) {
    throw py::value_error(x.what());
  } catch (const std::system_error& x) {
    raise_py(os_error(x.code().value(), std::string(x.what())));
  }
}

template <class F>
auto changes_nogil(F&& f) -> decltype(f()) {
  return run_nogil(std::forward<F>(f), raise_changes_error);
}

void bind_changes(py::module_& m) {
  using Triples = std::vector<IdTriple>;
  m.def(
      "changes",
      [](const py::object& new_root, const py::object& old_root, const py::object& lower_roots,
         const std::string& mode, const Triples& uid_map, const Triples& gid_map,
         const py::object& parent_uid_map, const py::object& parent_gid_map) {
        ChangesArgs a = changes_args(new_root, old_root, lower_roots, mode, uid_map, gid_map,
                                     parent_uid_map, parent_gid_map);
        std::vector<layerstore::Change> cs = changes_nogil([&] { return changes_compute(a); });
        py::list out(cs.size());
        for (size_t i = 0; i < cs.size(); ++i) {
          py::object path = py::reinterpret_steal<py::object>(PyUnicode_DecodeUTF8(
              cs[i].path.data(), static_cast<Py_ssize_t>(cs[i].path.size()), "surrogateescape"));
          out[i] = py::make_tuple(path, static_cast<int>(cs[i].kind));
        }
        return out;
      },
      py::arg("new_root"), py::arg("old_root"), py::kw_only(), py::arg("lower_roots") = py::none(),
      py::arg("mode") = "naive", py::arg("uid_map") = Triples{}, py::arg("gid_map") = Triples{},
      py::arg("parent_uid_map") = py::none(), py::arg("parent_gid_map") = py::none(),
      "Changes of new_root against old_root (naive) or of a diff/ dir against lower_roots "
      "(overlay) as (path, kind) with kind 0 Modify, 1 Add, 2 Delete.");
  m.def(
      "diff_size",
      [](const py::object& new_root, const py::object& old_root, const py::object& lower_roots,
         const std::string& mode, const Triples& uid_map, const Triples& gid_map,
         const py::object& parent_uid_map, const py::object& parent_gid_map) {
        ChangesArgs a = changes_args(new_root, old_root, lower_roots, mode, uid_map, gid_map,
                                     parent_uid_map, parent_gid_map);
        return changes_nogil([&]() -> int64_t {
          if (a.overlay) return layerstore::directory_size(a.new_root);
          return layerstore::changes_size(a.new_root, changes_compute(a));
        });
      },
      py::arg("new_root"), py::arg("old_root"), py::kw_only(), py::arg("lower_roots") = py::none(),
      py::arg("mode") = "naive", py::arg("uid_map") = Triples{}, py::arg("gid_map") = Triples{},
      py::arg("parent_uid_map") = py::none(), py::arg("parent_gid_map") = py::none(),
      "Go's DiffSize: naive ChangesSize, or the size of diff/ (overlay).");
  m.def(
      "export_changes",
      [](const py::object& new_root, const py::object& old_root, int out_fd,
         const std::string& mode, const py::object& lower_roots, const Triples& uid_map,
         const Triples& gid_map, const py::object& parent_uid_map,
         const py::object& parent_gid_map, int compression, int level, int threads) {
        ChangesArgs a = changes_args(new_root, old_root, lower_roots, mode, uid_map, gid_map,
                                     parent_uid_map, parent_gid_map);
        if (compression != 0 && compression != 2 && compression != 4) {
          const char* ext[] = {"tar", "tar.bz2", "tar.gz", "tar.xz", "tar.zst"};
          throw py::value_error(std::string("unsupported compression format ") +
                                (compression > 0 && compression < 5 ? ext[compression] : "?"));
        }
        if (threads < 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
        return changes_nogil([&]() -> uint64_t {
          layerstore::FdSink fd_sink(out_fd);
          std::unique_ptr<layerstore::ByteSink> sink = layerstore::make_compressing_sink(
              static_cast<layerstore::Compression>(compression), fd_sink, level, threads);
          if (a.overlay) {
            layerstore::export_tree(a.new_root, a.maps, true, a.lowers, *sink);
          } else if (a.old_root.empty()) {
            layerstore::export_tree(a.new_root, a.maps, false, {}, *sink);
          } else {
            layerstore::export_changes(a.new_root, changes_compute(a), a.maps, *sink);
          }
          sink->close();
          return fd_sink.bytes_written();
        });
      },
      py::arg("new_root"), py::arg("old_root"), py::arg("out_fd"), py::kw_only(),
      py::arg("mode") = "naive", py::arg("lower_roots") = py::none(),
      py::arg("uid_map") = Triples{}, py::arg("gid_map") = Triples{},
      py::arg("parent_uid_map") = py::none(), py::arg("parent_gid_map") = py::none(),
      py::arg("compression") = 0, py::arg("level") = -1, py::arg("threads") = -1,
      "The layer's tarball regenerated from its changes (Go's naive diff; with no old_root "
      "the whole tree; overlay: diff/ with whiteouts converted) written to out_fd, "
      "optionally compressed; returns the bytes written.");
}
}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "layerstore's private native core";
  bind_truncindex(m);
  bind_format(m);
  bind_apply(m);
  bind_changes(m);
}
