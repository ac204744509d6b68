/* recon host library, C ABI: run a recon artifact from C, C#, Java, Rust or Python ctypes.
 *
 *   recon_options options;
 *   recon_options_init(&options);
 *   recon_host* host = NULL;
 *   if (recon_open("artifacts/resunet-deblur", &options, &host) != RECON_OK) { puts(recon_last_error()); }
 *   int64_t shape[4] = {8, 1, 512, 512};
 *   recon_result* result = NULL;
 *   if (recon_run(host, pixels, RECON_F32, shape, 4, &result) == RECON_OK) { ... recon_result_free(result); }
 *   recon_close(host);
 *
 * Every function returns a status; on failure recon_last_error() holds a one-line message (per thread,
 * valid until the thread's next call). recon_run may be called from many threads on one handle at once.
 * Images are row-major float32; integers are scaled to [0, 1] by their type's maximum (images only).
 */
#ifndef RECON_HOST_H
#define RECON_HOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recon_status {
    RECON_OK = 0,
    RECON_ERROR_ARTIFACT = 1, /* the artifact is damaged, tampered with or unknown: re-export it */
    RECON_ERROR_BACKEND = 2,  /* the engine cannot run here */
    RECON_ERROR_INPUT = 3,    /* the input does not fit the artifact (shape, NaN/Inf, range) */
    RECON_ERROR_OPTION = 4,   /* an option the artifact cannot take */
    RECON_ERROR_CLOSED = 5,   /* the handle was closed */
    RECON_ERROR_ARGUMENT = 6, /* a NULL pointer, an index out of range */
    RECON_ERROR_INTERNAL = 7  /* anything else (out of memory) */
} recon_status;

typedef enum recon_dtype {
    RECON_F32 = 0, RECON_F64 = 1, RECON_U8 = 2, RECON_I8 = 3,
    RECON_U16 = 4, RECON_I16 = 5, RECON_U32 = 6, RECON_I32 = 7
} recon_dtype;

typedef struct recon_options {
    uint32_t struct_size;  /* sizeof(recon_options), set by recon_options_init */
    int32_t threads;       /* CPU threads; 0: one per core */
    const char* precision; /* NULL or "auto" (fp32), "fp32", "fp16", "int8" */
    int32_t clip;          /* -1: the manifest's choice, 0: off, 1: on */
    int32_t consistency;   /* 1: score every output (default), 0: no scores */
    int32_t tile;          /* 0: the manifest's tiling; > 0: tile images larger than this side */
    int32_t overlap;       /* -1: the manifest's overlap */
    const char* blend;     /* NULL: the manifest's; "gaussian" or "cosine" */
} recon_options;

typedef struct recon_host recon_host;     /* an opened artifact */
typedef struct recon_result recon_result; /* one run's images and scores */

void recon_options_init(recon_options* options);
const char* recon_last_error(void);
const char* recon_version(void);

/* Verify the artifact (manifest, files, sha256) and compile its graphs. options may be NULL. */
recon_status recon_open(const char* artifact_dir, const recon_options* options, recon_host** host);
/* The manifest and file checks alone (no engine): RECON_OK or RECON_ERROR_ARTIFACT with the reason. */
recon_status recon_verify(const char* artifact_dir);
/* Run the artifact's golden set (format 3) on this handle's engine and hold it to the manifest's tolerance, as
 * `recon verify` does: *passed 1 or 0, *max_abs and *psnr (NaN when not compared; psnr inf: identical), and
 * *line the one-line report (valid until the thread's next call). Any output pointer may be NULL. A damaged
 * golden set is RECON_ERROR_ARTIFACT; an artifact without one is RECON_OK with *passed 0 and the reason. */
recon_status recon_verify_golden(recon_host* host, int32_t* passed, double* max_abs, double* psnr, const char** line);
/* Waits for runs in flight, then frees everything; no call on the handle may start after it. NULL is ignored. */
void recon_close(recon_host* host);

/* data: rank 2 (H, W), 3 (B, H, W) or 4 (B, 1, H, W), row-major, of `dtype`. */
recon_status recon_run(recon_host* host, const void* data, recon_dtype dtype, const int64_t* shape, int32_t rank,
                       recon_result** result);

/* The images: *rank and shape[0..rank) (shape needs room for 4), and a pointer valid until recon_result_free. */
recon_status recon_result_images(const recon_result* result, const float** images, int64_t* shape, int32_t* rank);
/* Number of scored images (0 when the artifact has no consistency check or it is off). */
int64_t recon_result_score_count(const recon_result* result);
recon_status recon_result_score(const recon_result* result, int64_t index, double* residual, int32_t* flagged);
/* Why image `index` was flagged, reasons joined by "; " ("" when not flagged); valid until recon_result_free. */
const char* recon_result_reasons(const recon_result* result, int64_t index);
/* One statistic of image `index` by name (e.g. "residual"). */
recon_status recon_result_statistic(const recon_result* result, int64_t index, const char* name, double* value);
void recon_result_free(recon_result* result);

/* (batch, 1, H, W) for a batch of this artifact's nominal input (its fixed size, or the manifest's opt side). */
recon_status recon_input_shape(recon_host* host, int64_t batch, int64_t shape[4]);
/* How an H x W input runs: "whole", "padded" or "tiled" (a static string). NULL on a bad handle. */
const char* recon_size_plan(recon_host* host, int64_t height, int64_t width);

#ifdef __cplusplus
}
#endif

#endif /* RECON_HOST_H */
