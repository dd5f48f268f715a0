// The one file that knows about Python. Everything here converts arguments, releases
// the GIL around native work, and maps native failures to Python exceptions; the logic
// lives in the plain C++ folders beside this file.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "truncindex/truncindex.h"

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

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "layerstore's private native core";
  bind_truncindex(m);
}
