// manifest.json as plain JSON, read as recon.runtime.artifact.manifest.parse_manifest_json reads it:
// no NaN/Infinity, no float that overflows, no integer of 20+ digits, nesting at most 32 deep, keys in
// document order (a repeated key keeps its first place and its last value, as Python's json does).
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace recon::json {

using Json = nlohmann::ordered_json;

// The text refused, with the reason as Python words it (e.g. "NaN is not a JSON number").
class JsonRefused : public std::runtime_error {
  public:
    explicit JsonRefused(const std::string& reason, bool depth = false)
        : std::runtime_error(reason), too_deep(depth) {}
    bool too_deep;
};

Json parse_strict(const std::string& raw, int max_depth);

// Python's repr() of the parsed value (messages quote values as the Python runtime does).
std::string py_repr(const Json& value);
// Python's type name of the parsed value: dict, list, str, int, float, bool, NoneType.
std::string py_type(const Json& value);
// Python's repr() of a float (shortest round trip, "1e+308", "45.0").
std::string py_float(double value);

// Plain JSON numbers that are integers (not bools) / any number (not bools).
bool is_int(const Json& value);
bool is_number(const Json& value);
// An integer value, saturated to int64's range (only compared against small caps afterwards).
long long as_int(const Json& value);

}  // namespace recon::json
