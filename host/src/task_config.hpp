// The manifest's "task_config", validated field by field as recon.runtime.artifact.task_config does
// (DeblurTask / CTTask: the same rules, defaults, legacy keys and messages). The host does not need the
// values themselves (the physics is inside the graphs); it refuses what the Python runtime refuses.
#pragma once

#include <stdexcept>
#include <string>

#include "json_strict.hpp"

namespace recon::task_config {

class Invalid : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The task ("deblur" or "ct") of a valid configuration; Invalid names the first bad field.
std::string check(const json::Json& data);

}  // namespace recon::task_config
