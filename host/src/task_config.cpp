#include "task_config.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <vector>

namespace recon::task_config {
namespace {

using json::Json;
using json::py_repr;

struct Rule {
    std::string field;
    std::function<bool(const Json&)> ok;
    std::string expected;
};

bool is_int(const Json& v) { return json::is_int(v); }
bool is_real(const Json& v) { return v.is_number() && std::isfinite(v.get<double>()); }
Rule int_at_least(const std::string& field, long long low) {
    return {field, [low](const Json& v) { return is_int(v) && json::as_int(v) >= low; },
            "an integer >= " + std::to_string(low)};
}
Rule one_of(const std::string& field, std::vector<std::string> choices) {
    std::string text = "one of [";
    for (size_t i = 0; i < choices.size(); ++i) text += (i ? ", '" : "'") + choices[i] + "'";
    return {field,
            [choices](const Json& v) {
                return v.is_string() && std::find(choices.begin(), choices.end(), v.get<std::string>()) != choices.end();
            },
            text + "]"};
}
Rule real_at_least_0(const std::string& field) {
    return {field, [](const Json& v) { return is_real(v) && v.get<double>() >= 0; }, "a number >= 0"};
}

struct TaskType {
    std::map<std::string, Json> defaults;       // every field and its default
    std::vector<Rule> rules;                    // in the dataclass's order of checks
    std::map<std::string, std::string> legacy;  // old key -> field
};

const TaskType& task_type(const std::string& task) {
    static const TaskType deblur = {
        {{"image_size", 256}, {"kernel_kind", "motion"}, {"kernel_size", 7}, {"angle", 45.0},
         {"variance", 1.0}, {"motion_style", "centred"}, {"noise_level", 0.01}},
        {int_at_least("image_size", 2), one_of("kernel_kind", {"motion", "gaussian"}), int_at_least("kernel_size", 1),
         {"angle", is_real, "a finite number (degrees)"},
         {"variance", [](const Json& v) { return is_real(v) && v.get<double>() > 0; }, "a number > 0"},
         one_of("motion_style", {"centred", "course"}), real_at_least_0("noise_level")},
        {{"kind", "kernel_kind"}},
    };
    static const TaskType ct = {
        {{"image_size", 256}, {"n_views", 60}, {"n_detectors", nullptr}, {"detector_spacing", 1.0},
         {"angle_range", M_PI}, {"filter", "ram-lak"}, {"noise_level", 0.01}, {"oversample", 2}},
        {int_at_least("image_size", 2), int_at_least("n_views", 1),
         {"detector_spacing", [](const Json& v) { return is_real(v) && v.get<double>() > 0; }, "a number > 0 (image pixels)"},
         int_at_least("n_detectors", 1),
         {"angle_range", [](const Json& v) { return is_real(v) && v.get<double>() > 0 && v.get<double>() <= 2 * M_PI; },
          "in (0, 2π] (radians)"},
         one_of("filter", {"ram-lak", "shepp-logan", "hann"}), real_at_least_0("noise_level"), int_at_least("oversample", 1)},
        {{"n_angles", "n_views"}},
    };
    return task == "ct" ? ct : deblur;
}

}  // namespace

std::string check(const Json& data) {
    if (!data.is_object()) throw Invalid("a task config must be a JSON object, got " + json::py_type(data));
    auto found = data.find("task");
    bool known_task = found != data.end() && found->is_string() &&
                      (found->get<std::string>() == "deblur" || found->get<std::string>() == "ct");
    if (!known_task)
        throw Invalid("task config: task must be one of ['deblur', 'ct'], got " + py_repr(found == data.end() ? Json(nullptr) : *found));
    std::string task = found->get<std::string>();
    const TaskType& type = task_type(task);
    std::map<std::string, Json> values = type.defaults;
    std::vector<std::string> unknown;
    for (const auto& [key, value] : data.items()) {  // later keys win, as in Python's dict comprehension
        if (key == "task") continue;
        auto legacy = type.legacy.find(key);
        std::string field = legacy == type.legacy.end() ? key : legacy->second;
        if (!type.defaults.count(field)) {
            if (std::find(unknown.begin(), unknown.end(), field) == unknown.end()) unknown.push_back(field);
            continue;
        }
        values[field] = value;
    }
    if (!unknown.empty()) {
        std::sort(unknown.begin(), unknown.end());
        Json names = Json::array(), known = Json::array();
        for (const auto& name : unknown) names.push_back(name);
        for (const auto& [name, value] : type.defaults) known.push_back(name);  // std::map: sorted
        throw Invalid(task + " task config: unknown field(s) " + py_repr(names) + "; known: " + py_repr(known));
    }
    if (task == "ct" && values["n_detectors"].is_null()) {
        // CTTask.__post_init__: a missing count follows ceil(√2·N / spacing) when N and the spacing are valid
        const Json &size = values["image_size"], &spacing = values["detector_spacing"];
        if (is_int(size) && is_real(spacing) && spacing.get<double>() > 0) values["n_detectors"] = 1;
    }
    for (const Rule& rule : type.rules)
        if (!rule.ok(values[rule.field]))
            throw Invalid(task + " task config: " + rule.field + " must be " + rule.expected + ", got " + py_repr(values[rule.field]));
    return task;
}

}  // namespace recon::task_config
