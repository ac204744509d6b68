#include <recon/recon.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
    recon_host* host = NULL;
    recon_result* result = NULL;
    if (argc != 2 || recon_open(argv[1], NULL, &host) != RECON_OK) {
        fprintf(stderr, "error: %s\n", recon_last_error());
        return 1;
    }
    int64_t shape[4] = {2, 1, 64, 64};
    float* images = calloc(2 * 64 * 64, sizeof(float));
    if (recon_run(host, images, RECON_F32, shape, 4, &result) == RECON_OK) {
        for (int64_t i = 0; i < recon_result_score_count(result); ++i) {
            double residual;
            int32_t flagged;
            recon_result_score(result, i, &residual, &flagged);
            printf("residual %g%s\n", residual, flagged ? " FLAGGED" : " ok");
        }
        recon_result_free(result);
    } else {
        fprintf(stderr, "error: %s\n", recon_last_error());
    }
    free(images);
    recon_close(host);
    return 0;
}
