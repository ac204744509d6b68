// The C ABI (include/recon/recon.h) over recon::Reconstructor: exceptions become status codes plus a
// thread-local message; nothing C++ crosses the boundary.
#include "recon/recon.h"

#include <limits>
#include <new>
#include <string>

#include "recon/recon.hpp"

struct recon_host {
    std::unique_ptr<recon::Reconstructor> reconstructor;
};

struct recon_result {
    recon::Result result;
    std::vector<std::string> reasons;
};

namespace {

thread_local std::string last_error;

recon_status fail(recon_status status, const std::string& message) {
    last_error = message;
    return status;
}

template <typename Body>
recon_status guarded(Body body) {
    try {
        body();
        return RECON_OK;
    } catch (const recon::ArtifactError& e) {
        return fail(RECON_ERROR_ARTIFACT, e.what());
    } catch (const recon::BackendError& e) {
        return fail(RECON_ERROR_BACKEND, e.what());
    } catch (const recon::InputError& e) {
        return fail(RECON_ERROR_INPUT, e.what());
    } catch (const recon::OptionError& e) {
        return fail(RECON_ERROR_OPTION, e.what());
    } catch (const recon::ClosedError& e) {
        return fail(RECON_ERROR_CLOSED, e.what());
    } catch (const std::bad_alloc&) {
        return fail(RECON_ERROR_INTERNAL, "out of memory");
    } catch (const std::exception& e) {
        return fail(RECON_ERROR_INTERNAL, e.what());
    } catch (...) {
        return fail(RECON_ERROR_INTERNAL, "unknown error");
    }
}

}  // namespace

extern "C" {

void recon_options_init(recon_options* options) {
    if (!options) return;
    *options = recon_options{};
    options->struct_size = sizeof(recon_options);
    options->clip = -1;
    options->consistency = 1;
    options->overlap = -1;
}

const char* recon_last_error(void) { return last_error.c_str(); }

const char* recon_version(void) { return RECON_HOST_VERSION; }

recon_status recon_open(const char* artifact_dir, const recon_options* options, recon_host** host) {
    if (!artifact_dir || !host) return fail(RECON_ERROR_ARGUMENT, "recon_open: artifact_dir and host must not be NULL");
    *host = nullptr;
    recon_options given;
    recon_options_init(&given);
    if (options) {
        if (options->struct_size != sizeof(recon_options))
            return fail(RECON_ERROR_ARGUMENT, "recon_open: options->struct_size is not sizeof(recon_options); "
                                              "call recon_options_init first");
        given = *options;
    }
    return guarded([&] {
        recon::Options o;
        o.threads = given.threads;
        if (given.precision) o.precision = given.precision;
        if (given.clip >= 0) o.clip = given.clip != 0;
        o.consistency = given.consistency != 0;
        if (given.tile > 0) o.tile = given.tile;
        if (given.overlap >= 0) o.overlap = given.overlap;
        if (given.blend) o.blend = std::string(given.blend);
        auto made = std::make_unique<recon_host>();
        made->reconstructor = std::make_unique<recon::Reconstructor>(artifact_dir, o);
        *host = made.release();
    });
}

recon_status recon_verify(const char* artifact_dir) {
    if (!artifact_dir) return fail(RECON_ERROR_ARGUMENT, "recon_verify: artifact_dir must not be NULL");
    return guarded([&] { recon::verify_artifact(artifact_dir); });
}

recon_status recon_verify_golden(recon_host* host, int32_t* passed, double* max_abs, double* psnr, const char** line) {
    if (!host) return fail(RECON_ERROR_ARGUMENT, "recon_verify_golden: host must not be NULL");
    return guarded([&] {
        static thread_local std::string report;
        recon::Verification result = host->reconstructor->verify();
        report = result.line();
        const double nan = std::numeric_limits<double>::quiet_NaN();
        if (passed) *passed = result.passed ? 1 : 0;
        if (max_abs) *max_abs = result.max_abs.value_or(nan);
        if (psnr) *psnr = result.psnr.value_or(nan);
        if (line) *line = report.c_str();
    });
}

void recon_close(recon_host* host) { delete host; }

recon_status recon_run(recon_host* host, const void* data, recon_dtype dtype, const int64_t* shape, int32_t rank,
                       recon_result** result) {
    if (!host || !data || !shape || !result) return fail(RECON_ERROR_ARGUMENT, "recon_run: NULL argument");
    if (rank < 0 || rank > 8) return fail(RECON_ERROR_INPUT, "recon_run: rank must be 2, 3 or 4");
    if (dtype < RECON_F32 || dtype > RECON_I32) return fail(RECON_ERROR_ARGUMENT, "recon_run: unknown dtype");
    *result = nullptr;
    return guarded([&] {
        auto made = std::make_unique<recon_result>();
        made->result = host->reconstructor->run(data, static_cast<recon::DType>(dtype),
                                                std::vector<int64_t>(shape, shape + rank));
        for (const auto& score : made->result.scores) {
            std::string joined;
            for (size_t i = 0; i < score.reasons.size(); ++i) joined += (i ? "; " : "") + score.reasons[i];
            made->reasons.push_back(joined);
        }
        *result = made.release();
    });
}

recon_status recon_result_images(const recon_result* result, const float** images, int64_t* shape, int32_t* rank) {
    if (!result || !images || !shape || !rank) return fail(RECON_ERROR_ARGUMENT, "recon_result_images: NULL argument");
    *images = result->result.images.data();
    *rank = static_cast<int32_t>(result->result.shape.size());
    for (size_t i = 0; i < result->result.shape.size(); ++i) shape[i] = result->result.shape[i];
    return RECON_OK;
}

int64_t recon_result_score_count(const recon_result* result) {
    return result ? static_cast<int64_t>(result->result.scores.size()) : 0;
}

recon_status recon_result_score(const recon_result* result, int64_t index, double* residual, int32_t* flagged) {
    if (!result || index < 0 || index >= recon_result_score_count(result))
        return fail(RECON_ERROR_ARGUMENT, "recon_result_score: no score at that index");
    const recon::Score& score = result->result.scores[static_cast<size_t>(index)];
    if (residual) *residual = score.residual;
    if (flagged) *flagged = score.flagged ? 1 : 0;
    return RECON_OK;
}

const char* recon_result_reasons(const recon_result* result, int64_t index) {
    if (!result || index < 0 || index >= recon_result_score_count(result)) return "";
    return result->reasons[static_cast<size_t>(index)].c_str();
}

recon_status recon_result_statistic(const recon_result* result, int64_t index, const char* name, double* value) {
    if (!result || !name || !value || index < 0 || index >= recon_result_score_count(result))
        return fail(RECON_ERROR_ARGUMENT, "recon_result_statistic: no score at that index");
    for (const auto& [stat, number] : result->result.scores[static_cast<size_t>(index)].statistics)
        if (stat == name) {
            *value = number;
            return RECON_OK;
        }
    return fail(RECON_ERROR_ARGUMENT, std::string("recon_result_statistic: no statistic named ") + name);
}

void recon_result_free(recon_result* result) { delete result; }

recon_status recon_input_shape(recon_host* host, int64_t batch, int64_t shape[4]) {
    if (!host || !shape) return fail(RECON_ERROR_ARGUMENT, "recon_input_shape: NULL argument");
    std::array<int64_t, 4> dims = host->reconstructor->input_shape(batch);
    for (size_t i = 0; i < 4; ++i) shape[i] = dims[i];
    return RECON_OK;
}

const char* recon_size_plan(recon_host* host, int64_t height, int64_t width) {
    if (!host) return nullptr;
    std::string plan = host->reconstructor->size_plan(height, width);
    return plan == "whole" ? "whole" : plan == "padded" ? "padded" : "tiled";
}

}  // extern "C"
