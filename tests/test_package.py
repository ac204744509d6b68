"""The package layout and the runtime boundary."""

import subprocess
import sys


def test_the_three_folders_install_as_recon_subpackages():
    import recon.export
    import recon.runtime
    import recon.training
    import recon.weights

    assert recon.training.__file__.replace("\\", "/").endswith("training/__init__.py")
    assert recon.export.__file__.replace("\\", "/").endswith("export/__init__.py")
    assert recon.runtime.__file__.replace("\\", "/").endswith("runtime/__init__.py")
    assert recon.weights.WEIGHTS_DIR.name == "weights"


def test_importing_the_runtime_does_not_import_torch():
    code = (
        "import sys, pkgutil, importlib, recon.runtime\n"
        "for m in pkgutil.walk_packages(recon.runtime.__path__, 'recon.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules\n"
        "             if n.split('.')[0] == 'torch' or n.startswith(('recon.training', 'recon.export')))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
