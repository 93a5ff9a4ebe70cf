// Internal error type: thrown inside the library, turned into a status code and a thread-local
// message by c_api.cpp (the only place exceptions stop). Messages follow medsam3_rt/errors.py:
// one line naming the thing, what was expected and the fix.
#pragma once

#include <stdexcept>
#include <string>

#include "medsam3rt/medsam3rt.h"

namespace m3rt {

class Error : public std::runtime_error {
public:
    Error(medsam3rt_status status, const std::string& message) : std::runtime_error(one_line(message)), status_(status) {}
    medsam3rt_status status() const noexcept { return status_; }

    // Whitespace runs (newlines included) collapse to one space, like Medsam3Error.__init__.
    static std::string one_line(const std::string& text) {
        std::string out;
        bool space = false;
        for (char c : text) {
            if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
                space = !out.empty();
            } else {
                if (space) out.push_back(' ');
                space = false;
                out.push_back(c);
            }
        }
        return out;
    }

private:
    medsam3rt_status status_;
};

// The Python runtime's exception classes, by exit code.
inline Error UsageError(const std::string& m) { return Error(MEDSAM3RT_ERROR_USAGE, m); }
inline Error InputError(const std::string& m) { return Error(MEDSAM3RT_ERROR_INPUT, m); }
inline Error ModelError(const std::string& m) { return Error(MEDSAM3RT_ERROR_MODEL, m); }
inline Error BackendError(const std::string& backend, const std::string& reason) {
    return Error(MEDSAM3RT_ERROR_BACKEND, "backend '" + backend + "' is unavailable: " + reason);
}
inline Error InternalError(const std::string& m) { return Error(MEDSAM3RT_ERROR_INTERNAL, "internal error: " + m); }

// First line of a foreign exception's text (OpenVINO messages span many lines), like errors.first_line.
inline std::string first_line(const std::string& text, size_t limit = 300) {
    size_t start = text.find_first_not_of(" \t\r\n");
    if (start == std::string::npos) return "unknown error";
    size_t end = text.find('\n', start);
    std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    return line.substr(0, limit);
}

}  // namespace m3rt
