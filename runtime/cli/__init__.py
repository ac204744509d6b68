"""The command lines: recon (main), recon-run (run), recon-bench (bench), and their shared parts (base).
The top of the runtime: nothing below imports it."""
