"""Files in and out: safe opening and atomic writes (files), the image formats (imageio), DICOM (dicom) and
DICOM series (dicom_series). Imports nothing of the runtime but runtime/limits."""
