#include <recon/recon.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
    recon_host* host = NULL;
    recon_result* result = NULL;
    if (argc != 2 || recon_open(argv[1], NULL, &host) != RECON_OK) {  /* NULL: default options */
        fprintf(stderr, "error: %s\n", argc == 2 ? recon_last_error() : "usage: reconstruct ARTIFACT");
        return 1;
    }
    int64_t shape[4];
    recon_input_shape(host, 2, shape); /* (2, 1, H, W) this artifact takes */
    size_t count = (size_t)(shape[0] * shape[2] * shape[3]);
    float* images = malloc(count * sizeof(float));
    for (size_t i = 0; i < count; ++i) images[i] = 0.25f; /* your images, row-major */
    recon_status status = recon_run(host, images, RECON_F32, shape, 4, &result);
    if (status == RECON_OK) {
        for (int64_t i = 0; i < recon_result_score_count(result); ++i) {
            double residual;
            int32_t flagged;
            recon_result_score(result, i, &residual, &flagged);
            printf("residual %g%s %s\n", residual, flagged ? " FLAGGED:" : " ok", recon_result_reasons(result, i));
        }
        recon_result_free(result);
    } else {
        fprintf(stderr, "error: %s\n", recon_last_error());
    }
    free(images);
    recon_close(host);
    return status == RECON_OK ? 0 : 1;
}
