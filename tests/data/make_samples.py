"""Writes the sample documents in this folder; their outputs are committed.

    .venv/bin/python tests/data/make_samples.py    # needs Pillow (pip install pillow)

Every file is made here, from nothing but this script, so we know what is in it:

- invoice.pdf          one page, a real text layer (Helvetica text objects), hand-written PDF
- invoice.png/.jpg/.tiff  the same invoice lines rendered as pixels (for the OCR stage)
- invoice.txt          plain UTF-8 text with a date, an amount and an e-mail address
- spoofed_elf.pdf      an ELF executable header under a .pdf name (must fail validation)
- spoofed_pe.pdf       a DOS/PE "MZ" stub under a .pdf name (must fail validation)
- empty.txt            zero bytes (must fail validation)

The output is deterministic for a given Pillow version, so running it again leaves git clean.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent

INVOICE_LINES = [
    "INVOICE 2024-0042",
    "Date: 2024-03-15",
    "Total: 1,234.56 EUR",
    "Contact: billing@example.com",
]


def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF 1.4 whose text is real text objects (extractable, searchable)."""
    text_ops = ["BT", "/F1 18 Tf", "72 720 Td", "24 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({escaped}) Tj T*")
    text_ops.append("ET")
    content = "\n".join(text_ops).encode("ascii")

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary comment: "this file is binary"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n" % (len(objects) + 1)
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    return bytes(out)


def rendered_invoice(fmt: str, **save_options) -> bytes:
    """The invoice lines as black text on white, large enough for OCR."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=28)
    image = Image.new("L", (640, 220), color=255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(INVOICE_LINES):
        draw.text((24, 20 + index * 46), line, fill=0, font=font)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_options)
    return buffer.getvalue()


def elf_header() -> bytes:
    """A 64-bit little-endian ELF executable header (x86-64), no code behind it."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little endian, version 1, SysV
    # e_type EXEC, e_machine x86-64, e_version, e_entry, e_phoff, e_shoff, e_flags,
    # e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
    fields = struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x401000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + fields + b"%PDF-1.4 pretend\n"


def pe_stub() -> bytes:
    """A DOS "MZ" header with the classic stub message, as at the start of every .exe."""
    header = bytearray(64)
    header[0:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, 0x80)  # e_lfanew: where the PE header would start
    stub = b"This program cannot be run in DOS mode.\r\r\n$"
    body = bytes(header) + stub
    return body + bytes(0x80 - len(body)) + b"PE\0\0"


def invoice_text() -> bytes:
    return (
        b"INVOICE 2024-0042\n"
        b"Date: 2024-03-15\n"
        b"Total: 1,234.56 EUR (one thousand two hundred thirty-four euros)\n"
        b"Questions: billing@example.com\n"
    )


SAMPLES = {
    "invoice.pdf": lambda: minimal_pdf(INVOICE_LINES),
    "invoice.png": lambda: rendered_invoice("PNG", optimize=True),
    "invoice.jpg": lambda: rendered_invoice("JPEG", quality=85),
    "invoice.tiff": lambda: rendered_invoice("TIFF", compression="tiff_lzw"),
    "invoice.txt": invoice_text,
    "spoofed_elf.pdf": elf_header,
    "spoofed_pe.pdf": pe_stub,
    "empty.txt": lambda: b"",
}


def main() -> None:
    for name, make in SAMPLES.items():
        data = make()
        (HERE / name).write_bytes(data)
        print(f"{name:18} {len(data):6} bytes")


if __name__ == "__main__":
    main()
