"""The shipped OCR engines, all real: a PDF's text layer, plain text as is, images through Tesseract.

``DocumentOcr`` (the default) picks one by the document's detected MIME type and fails a
document in which it finds no text. Each engine is a plain callable ``(data, mime_type) -> str``
(``docstatus.pipeline.stages.OcrEngine``), usable on its own.

Tesseract is a program (Debian: ``apt-get install tesseract-ocr``), driven through pytesseract.
Where it is missing, an image fails with ``OcrEngineNotInstalled`` ("OCR engine not installed:
..."), never with a made-up result.
"""

from __future__ import annotations

import codecs
import io
import shutil

from docstatus.pipeline.errors import NoTextFound, OcrEngineNotInstalled, OcrError, UnsupportedDocumentType


class PdfTextLayer:
    """The text layer of a PDF, page by page (pypdf). A scanned PDF has none: its text is ''."""

    name = "pdf-text-layer"

    def __call__(self, data: bytes, mime_type: str = "application/pdf") -> str:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise OcrError("the PDF is encrypted with a password")
            pages = [page.extract_text() or "" for page in reader.pages]
        except PdfReadError as exc:
            raise OcrError(f"not a readable PDF: {exc}") from exc
        return "\n\n".join(page.strip() for page in pages if page.strip())


class PlainText:
    """Text files as they are: UTF-8 (with or without BOM), UTF-16 with a BOM, else Windows-1252."""

    name = "plain-text"

    def __call__(self, data: bytes, mime_type: str = "text/plain") -> str:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            # Every byte has a meaning in cp1252 except five; those become U+FFFD.
            return data.decode("cp1252", errors="replace")


class TesseractOcr:
    """Images (PNG, JPEG, TIFF with all its pages) through the Tesseract program."""

    name = "tesseract"

    def __init__(self, languages: str = "eng", timeout: float = 120.0, tesseract_cmd: str = "tesseract") -> None:
        self.languages = languages
        self.timeout = timeout
        self.tesseract_cmd = tesseract_cmd

    def available(self) -> bool:
        return shutil.which(self.tesseract_cmd) is not None

    def __call__(self, data: bytes, mime_type: str = "image/png") -> str:
        executable = shutil.which(self.tesseract_cmd)
        if executable is None:
            raise OcrEngineNotInstalled(
                f"OCR engine not installed: {mime_type} needs Tesseract ({self.tesseract_cmd!r} is not on PATH; "
                "on Debian/Ubuntu: apt-get install tesseract-ocr)")
        try:
            import pytesseract  # type: ignore[import-untyped]  # pytesseract ships no types
            from PIL import Image, ImageSequence, UnidentifiedImageError
        except ImportError as exc:
            raise OcrEngineNotInstalled(f"OCR engine not installed: {exc} (pip install pytesseract pillow)") from exc

        pytesseract.pytesseract.tesseract_cmd = executable
        try:
            with Image.open(io.BytesIO(data)) as image:
                pages = [pytesseract.image_to_string(frame.convert("RGB"), lang=self.languages, timeout=self.timeout)
                         for frame in ImageSequence.Iterator(image)]
        except UnidentifiedImageError as exc:
            raise OcrError(f"not a readable image: {exc}") from exc
        return "\n\n".join(page.strip() for page in pages if page.strip())


class DocumentOcr:
    """The default OCR stage: the engine for the document's MIME type; no text is a failure."""

    name = "document-ocr"

    def __init__(self, pdf: PdfTextLayer | None = None, text: PlainText | None = None,
                 image: TesseractOcr | None = None) -> None:
        self.pdf = pdf or PdfTextLayer()
        self.text = text or PlainText()
        self.image = image or TesseractOcr()

    def engine_for(self, mime_type: str):
        if mime_type == "application/pdf":
            return self.pdf
        if mime_type.startswith("text/"):
            return self.text
        if mime_type.startswith("image/"):
            return self.image
        raise UnsupportedDocumentType(f"no OCR engine reads {mime_type}")

    def __call__(self, data: bytes, mime_type: str) -> str:
        engine = self.engine_for(mime_type)
        text = engine(data, mime_type)
        if not text.strip():
            hint = " (a scanned PDF without a text layer?)" if engine is self.pdf else ""
            raise NoTextFound(f"no text found in the {mime_type} document by {engine.name}{hint}")
        return text


__all__ = ["DocumentOcr", "PdfTextLayer", "PlainText", "TesseractOcr"]
