#include <recon/recon.hpp>

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    try {
        recon::Reconstructor rec(argv[1]);  // checks manifest.json and every file's sha256
        std::array<int64_t, 4> shape = rec.input_shape(8);  // (8, 1, H, W) this artifact takes
        std::vector<float> batch(shape[0] * shape[2] * shape[3], 0.25f);  // your images, row-major
        recon::Result out = rec.run(batch.data(), {shape.begin(), shape.end()});
        for (const recon::Score& s : out.scores)  // one per image: trust it, or send it to review
            std::cout << "residual " << s.residual << (s.flagged ? " FLAGGED" : " ok") << "\n";
    } catch (const recon::Error& error) {  // ArtifactError, BackendError, InputError, ...
        std::cerr << "error: " << error.what() << "\n";
        return 1;
    }
}
