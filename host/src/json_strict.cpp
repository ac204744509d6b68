#include "json_strict.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

namespace recon::json {
namespace {

bool integer_syntax(const std::string& token) {
    if (token.empty()) return false;
    for (size_t i = 0; i < token.size(); ++i)
        if (!(std::isdigit(static_cast<unsigned char>(token[i])) || (i == 0 && token[i] == '-'))) return false;
    return true;
}

// Builds an ordered_json document, refusing what Python's strict reader refuses.
class StrictBuilder {
  public:
    StrictBuilder(const std::string& raw, int max_depth) : raw_(raw), max_depth_(max_depth) {}

    bool null() { return put(Json(nullptr)); }
    bool boolean(bool value) { return put(Json(value)); }
    bool number_integer(Json::number_integer_t value) { return put(Json(value)); }
    bool number_unsigned(Json::number_unsigned_t value) {
        // 20-digit integers that fit uint64 (>= 1e19 > INT64_MAX: JSON has no leading zeros)
        if (value >= 10000000000000000000ULL) return refuse("integer with 20 digits");
        return put(Json(value));
    }
    bool number_float(Json::number_float_t value, const std::string& text) {
        if (integer_syntax(text)) {  // an integer beyond uint64: nlohmann read it as a float
            std::string digits = text[0] == '-' ? text.substr(1) : text;
            if (digits.size() > 19) return refuse("integer with " + std::to_string(text.size()) + " digits");
        }
        return put(Json(value));
    }
    bool string(std::string& value) { return put(Json(std::move(value))); }
    bool binary(Json::binary_t&) { return refuse("binary values are not JSON"); }
    bool start_object(std::size_t) { return open(Json::object()); }
    bool start_array(std::size_t) { return open(Json::array()); }
    bool end_object() { return close(); }
    bool end_array() { return close(); }
    bool key(std::string& name) {
        if (skipped_ > 0) return true;
        key_ = std::move(name);
        return true;
    }
    bool parse_error(std::size_t position, const std::string& last_token, const nlohmann::detail::exception& error) {
        if (!reason_.empty()) return false;
        if (error.id == 406) {  // a number that overflows
            std::string token = last_token;
            if (integer_syntax(token)) return refuse("integer with " + std::to_string(token.size()) + " digits");
            return refuse("number " + token.substr(0, 40) + " overflows a float");
        }
        // Python's json reads NaN / Infinity / -Infinity and recon refuses them by name: is the byte the
        // parser stopped at part of one of them?
        size_t at = position > 0 ? position - 1 : 0;
        for (const char* constant : {"-Infinity", "Infinity", "NaN"}) {
            std::string name(constant);
            for (size_t start = at >= name.size() ? at - name.size() + 1 : 0; start <= at; ++start)
                if (raw_.compare(start, name.size(), name) == 0) return refuse(name + " is not a JSON number");
        }
        std::string what = error.what();
        size_t cut = what.find("] ");
        return refuse(cut == std::string::npos ? what : what.substr(cut + 2));
    }

    Json take() { return std::move(root_); }
    const std::string& reason() const { return reason_; }
    bool too_deep() const { return too_deep_; }

  private:
    bool refuse(const std::string& reason) {
        if (reason_.empty()) reason_ = reason;
        return false;
    }
    Json* insert(Json value) {
        if (stack_.empty()) {
            root_ = std::move(value);
            return &root_;
        }
        Json& parent = *stack_.back();
        if (parent.is_array()) {
            parent.push_back(std::move(value));
            return &parent.back();
        }
        Json& slot = parent[key_];  // a repeated key: first place, last value (Python's dict)
        slot = std::move(value);
        return &slot;
    }
    bool put(Json value) {
        if (skipped_ > 0) return true;
        insert(std::move(value));
        return true;
    }
    bool open(Json container) {
        // Python checks the depth after parsing the whole text, so a later syntax error still wins: keep
        // parsing, without building what lies deeper than the cap (nlohmann's parser does not recurse)
        if (skipped_ > 0 || static_cast<int>(stack_.size()) + 1 > max_depth_) {
            too_deep_ = true;
            ++skipped_;
            return true;
        }
        // the parent does not grow while a child is open, so the pointer stays valid
        stack_.push_back(insert(std::move(container)));
        return true;
    }
    bool close() {
        if (skipped_ > 0) --skipped_;
        else stack_.pop_back();
        return true;
    }

    const std::string& raw_;
    int max_depth_;
    Json root_;
    std::vector<Json*> stack_;
    std::string key_;
    std::string reason_;
    bool too_deep_ = false;
    long skipped_ = 0;  // containers open beyond the cap
};

void append_repr_string(std::string& out, const std::string& text) {
    // Python prefers single quotes, double quotes when the text holds a ' and no "
    bool single = text.find('\'') != std::string::npos;
    bool dbl = text.find('"') != std::string::npos;
    char quote = (single && !dbl) ? '"' : '\'';
    out += quote;
    for (size_t i = 0; i < text.size(); ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
        if (c == 0xC2 && ((next >= 0x80 && next <= 0xA0) || next == 0xAD)) {  // U+0080-U+00A0, U+00AD: not printable
            char buffer[8];
            std::snprintf(buffer, sizeof buffer, "\\x%02x", next);
            out += buffer;
            ++i;
        } else if (c == static_cast<unsigned char>(quote) || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            char buffer[8];
            std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
            out += buffer;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += quote;
}

void append_repr(std::string& out, const Json& value, size_t& budget) {
    if (budget == 0) return;  // reprs of hostile documents stay short
    --budget;
    switch (value.type()) {
        case Json::value_t::null: out += "None"; break;
        case Json::value_t::boolean: out += value.get<bool>() ? "True" : "False"; break;
        case Json::value_t::number_integer: out += std::to_string(value.get<long long>()); break;
        case Json::value_t::number_unsigned: out += std::to_string(value.get<unsigned long long>()); break;
        case Json::value_t::number_float: out += py_float(value.get<double>()); break;
        case Json::value_t::string: append_repr_string(out, value.get_ref<const std::string&>()); break;
        case Json::value_t::array: {
            out += '[';
            bool first = true;
            for (const Json& item : value) {
                if (!first) out += ", ";
                first = false;
                append_repr(out, item, budget);
            }
            out += ']';
            break;
        }
        case Json::value_t::object: {
            out += '{';
            bool first = true;
            for (const auto& [name, item] : value.items()) {
                if (!first) out += ", ";
                first = false;
                append_repr_string(out, name);
                out += ": ";
                append_repr(out, item, budget);
            }
            out += '}';
            break;
        }
        default: out += "?"; break;
    }
}

}  // namespace

Json parse_strict(const std::string& raw, int max_depth) {
    if (raw.size() >= 3 && raw.compare(0, 3, "\xEF\xBB\xBF") == 0)  // nlohmann would skip it, Python does not
        throw JsonRefused("Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)");
    StrictBuilder builder(raw, max_depth);
    bool ok = Json::sax_parse(raw, &builder, Json::input_format_t::json, true);
    if (!ok || !builder.reason().empty()) throw JsonRefused(builder.reason().empty() ? "syntax error" : builder.reason());
    if (builder.too_deep()) throw JsonRefused("nested deeper", true);
    return builder.take();
}

std::string py_float(double value) {
    if (std::isnan(value)) return "nan";
    if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
    char buffer[64];
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
    (void)ec;
    std::string text(buffer, end);  // d.ddde±XX, the shortest round trip
    size_t e = text.find('e');
    std::string mantissa = text.substr(0, e);
    int exponent = std::stoi(text.substr(e + 1));
    bool negative = mantissa[0] == '-';
    if (negative) mantissa.erase(0, 1);
    std::string digits;
    for (char c : mantissa)
        if (c != '.') digits += c;
    std::string out;
    if (exponent < -4 || exponent >= 16) {  // Python's repr switches to exponent form there
        out = digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        char exp[16];
        std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
        out += exp;
    } else if (exponent < 0) {
        out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else {
        size_t point = static_cast<size_t>(exponent) + 1;
        if (digits.size() <= point) out = digits + std::string(point - digits.size(), '0') + ".0";
        else out = digits.substr(0, point) + "." + digits.substr(point);
    }
    return negative ? "-" + out : out;
}

std::string py_repr(const Json& value) {
    std::string out;
    size_t budget = 200;
    append_repr(out, value, budget);
    return out;
}

std::string py_type(const Json& value) {
    switch (value.type()) {
        case Json::value_t::null: return "NoneType";
        case Json::value_t::boolean: return "bool";
        case Json::value_t::number_integer:
        case Json::value_t::number_unsigned: return "int";
        case Json::value_t::number_float: return "float";
        case Json::value_t::string: return "str";
        case Json::value_t::array: return "list";
        case Json::value_t::object: return "dict";
        default: return "object";
    }
}

bool is_int(const Json& value) { return value.is_number_integer(); }

bool is_number(const Json& value) {
    if (!value.is_number()) return false;
    return std::fabs(value.get<double>()) <= 3.4028234663852886e38;
}

long long as_int(const Json& value) {
    if (value.is_number_unsigned()) {
        auto big = value.get<unsigned long long>();
        return big > static_cast<unsigned long long>(std::numeric_limits<long long>::max())
                   ? std::numeric_limits<long long>::max()
                   : static_cast<long long>(big);
    }
    return value.get<long long>();
}

}  // namespace recon::json
