"""The rotation detector (qwenocr/pages/orientation.py) on generated scans: its accuracy.

Each "scan" is a text page set in DejaVu Sans or Serif (10 to 14 point at about 130 dpi,
the size of a 1536-token page), one or two columns, ragged or justified, a heading, sometimes a picture block,
then made scan-like: skewed by up to +-3 degrees, blurred, grey paper, sensor noise and
specks, JPEG-compressed, and turned 0, 90, 180 or 270 degrees (as a page fed sideways or
upside down). Besides them: photo-only pages, blank pages and pages with a single line,
which must be left as they are.

    python benchmarks/bench_orientation.py [--pages 40] [--seed 1]
    python benchmarks/bench_orientation.py --real scan.pdf photo.png cardinal.pdf#2=270 ...

prints the confusion table (true turn needed -> turn detected), the accuracy, the
false-turn rate on upright pages and the milliseconds per page. tests/test_orientation.py
imports `scan_page`, `photo_page` and `blank_page` from here.

`--real` measures real scans instead (PDF pages or images; none ship with qwenocr: pass
your own). Each page is rendered at about the size the model gets (1536 visual tokens),
as the pipeline renders it. `FILE` (every page) or `FILE#N` (page N) is a page known to be
upright: it is tried as it is and turned 90, 180 and 270 degrees. `FILE#N=T` is a page
known to need a turn of T degrees clockwise (a page scanned sideways): it is tried as it is.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
FACES = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansCondensed.ttf")
PAGE = (1088, 1408)  # pixels: 1496 tokens of 32x32, a Letter-shaped page

WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an they"
    " you were her all she there would their we him been has when who will more no if out so said what up its"
    " about into than them can only other new some could time these two may then do first any my now such like"
    " our over man me even most made after also did many before must through back years where much your way well"
    " down should because each just those people how too little state good very make world still own see men work"
    " long get here between both life being under never day same another know while last might us great old year"
    " off come since against go came right used take three report quarterly budget analysis figure table results"
    " shipping delivery invoice payment account balance meeting library history chapter section journal"
).split()


def _font(face: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / face), size)


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
    words[0] = words[0].capitalize()
    if rng.random() < 0.3:
        words.insert(rng.randint(1, len(words) - 1), str(rng.randint(1, 2030)))
    return " ".join(words) + rng.choice(".....,;:?")


def upright_page(rng: random.Random, size=PAGE) -> Image.Image:
    """A clean upright text page."""
    width, height = size
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    face = rng.choice(FACES)
    body = _font(face, rng.randint(18, 26))
    margin = rng.randint(70, 120)
    columns = rng.choice((1, 1, 2))
    gutter = 40
    column_width = (width - 2 * margin - gutter * (columns - 1)) // columns
    y = margin
    heading = _font(face.replace(".ttf", "-Bold.ttf") if "Condensed" not in face else face, rng.randint(30, 40))
    draw.text((margin, y), " ".join(rng.choice(WORDS).capitalize() for _ in range(rng.randint(2, 5))), font=heading)
    y += 70
    line_height = int(body.size * rng.uniform(1.25, 1.6))
    picture = rng.random() < 0.3
    justified = rng.random() < 0.5  # both edges straight but for paragraphs' last lines
    for column in range(columns):
        x = margin + column * (column_width + gutter)
        cy = y
        while cy < height - margin - line_height:
            if picture and column == 0 and abs(cy - height // 2) < line_height:
                draw.rectangle((x, cy, x + column_width, cy + 250), fill=rng.randint(60, 160))
                cy += 250 + line_height
                continue
            line = ""
            while True:
                word = rng.choice(WORDS)
                if draw.textlength(line + " " + word, font=body) > column_width:
                    break
                line = (line + " " + word).strip()
            if rng.random() < 0.12:  # a paragraph ends
                line = line[: rng.randint(5, max(6, len(line)))]
                draw.text((x, cy), line, font=body)
                cy += line_height * 2
                continue
            if rng.random() < 0.2:
                line = line[0].upper() + line[1:]
            if justified:
                _justify(draw, (x, cy), line, body, column_width)
            else:
                draw.text((x, cy), line, font=body)
            cy += line_height
    return image


def _justify(draw: ImageDraw.ImageDraw, at, line: str, font, width: int) -> None:
    """`line` drawn from `at` with its spaces stretched to fill `width`."""
    words = line.split()
    if len(words) < 2:
        draw.text(at, line, font=font)
        return
    spare = width - sum(draw.textlength(word, font=font) for word in words)
    gap = spare / (len(words) - 1)
    x = float(at[0])
    for word in words:
        draw.text((round(x), at[1]), word, font=font)
        x += draw.textlength(word, font=font) + gap


def as_scan(image: Image.Image, rng: random.Random) -> Image.Image:
    """`image` made to look scanned: skew, blur, grey paper, noise, specks, JPEG."""
    import numpy as np

    image = image.rotate(rng.uniform(-3.0, 3.0), resample=Image.Resampling.BICUBIC, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    pixels = np.asarray(image, dtype=np.float32)
    paper = rng.uniform(200, 245)
    pixels = pixels * (paper / 255.0) + np.random.default_rng(rng.randint(0, 2**31)).normal(
        0, rng.uniform(3, 12), pixels.shape
    )
    specks = np.random.default_rng(rng.randint(0, 2**31)).random(pixels.shape) < rng.uniform(0, 0.002)
    pixels[specks] = 30
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=rng.randint(40, 85))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def scan_page(seed: int, needed: int) -> Image.Image:
    """A scanned text page that needs a turn of `needed` degrees clockwise to be upright."""
    from qwenocr.pages.orientation import turn

    rng = random.Random(seed)
    page = as_scan(upright_page(rng), rng)
    return turn(page, (360 - needed) % 360)


def photo_page(seed: int, size=PAGE) -> Image.Image:
    """A photograph-like page: smooth shading, shapes, texture; no text."""
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.zeros((height, width, 3), np.float32)
    for channel in range(3):
        a, b, c = rng.uniform(-1, 1, 3)
        pixels[..., channel] = 128 + 80 * np.sin(a * x / 150 + b * y / 170 + c * 6)
    image = Image.fromarray(np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(20, 200))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image.filter(ImageFilter.GaussianBlur(2))


def blank_page(seed: int, size=PAGE) -> Image.Image:
    """Grey scanned paper with noise and a few specks."""
    rng = random.Random(seed)
    return as_scan(Image.new("L", size, 255), rng)


def line_page(seed: int, size=PAGE) -> Image.Image:
    """A page with one short line of text (a title page, a separator): too little to judge."""
    rng = random.Random(seed)
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).text((200, 600), "Appendix B", font=_font("DejaVuSans.ttf", 40))
    return as_scan(image, rng)


def _real_pages(spec: str):
    """(name, image as the model would get it, turn needed) for each page `spec` names."""
    import pypdfium2 as pdfium

    path, _, rest = spec.partition("#")
    number_text, _, turn_text = rest.partition("=")
    needed = int(turn_text) if turn_text else None
    budget = 1536 * 32 * 32  # pixels of a 1536-token page

    def fitted(image: Image.Image) -> Image.Image:
        scale = (budget / (image.width * image.height)) ** 0.5
        return image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))

    if path.lower().endswith(".pdf"):
        document = pdfium.PdfDocument(path)
        numbers = [int(number_text)] if number_text else range(1, len(document) + 1)
        for number in numbers:
            page = document[number - 1]
            width, height = page.get_size()
            image = page.render(scale=(budget / (width * height)) ** 0.5).to_pil()
            yield f"{Path(path).name}#{number}", fitted(image), needed
    else:
        yield Path(path).name, fitted(Image.open(path)), needed


def real_scans(specs: list) -> None:
    """The detector on real pages: upright ones in every turn, sideways ones as they are."""
    from qwenocr.pages.orientation import TURNS, detect, turn

    rows = []
    for spec in specs:
        for name, image, needed in _real_pages(spec):
            trials = [(needed, image)] if needed is not None else [((360 - t) % 360, turn(image, t)) for t in TURNS]
            for want, trial in trials:
                started = time.perf_counter()
                found = detect(trial)
                rows.append((name, want, found.turn, time.perf_counter() - started, found))
    right = sum(1 for r in rows if r[1] == r[2])
    wrong = sum(1 for r in rows if r[2] not in (0, r[1]))
    upright = [r for r in rows if r[1] == 0]
    print(f"{len(rows)} real pages (each upright one in 4 turns)")
    for name, want, got, seconds, found in rows:
        mark = "ok" if want == got else ("left" if got == 0 else "WRONG")
        print(f"  {name:<24} needed {want:>3}  detected {got:>3}  {mark:<5} {1000 * seconds:5.1f} ms  {found.reason}")
    print(f"turned right (or rightly left): {right}/{len(rows)} = {right / len(rows):.1%}")
    print(f"wrong turns: {wrong}; false turns on upright pages: {sum(1 for r in upright if r[2])}/{len(upright)}")


def main(argv: Optional[list] = None) -> None:
    from qwenocr.pages.orientation import TURNS, detect

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40, help="text pages per turn")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--real", nargs="+", metavar="FILE[#N[=T]]", help="real scans instead (see above)")
    args = parser.parse_args(argv)
    if args.real:
        real_scans(args.real)
        return

    confusion = {needed: {found: 0 for found in TURNS} for needed in TURNS}
    seconds = []
    misses = []
    for index in range(args.pages):
        for needed in TURNS:
            image = scan_page(args.seed * 100_000 + index, needed)
            started = time.perf_counter()
            result = detect(image)
            seconds.append(time.perf_counter() - started)
            confusion[needed][result.turn] += 1
            if result.turn != needed:
                misses.append((index, needed, result))
    others = {"photo": photo_page, "blank": blank_page, "one line": line_page}
    other_turns = {name: 0 for name in others}
    for name, make in others.items():
        for index in range(max(4, args.pages // 4)):
            started = time.perf_counter()
            result = detect(make(args.seed * 100_000 + index))
            seconds.append(time.perf_counter() - started)
            other_turns[name] += result.turn != 0

    total = args.pages * len(TURNS)
    right = sum(confusion[t][t] for t in TURNS)
    wrong_turns = sum(confusion[n][f] for n in TURNS for f in TURNS if f not in (n, 0))
    print(f"{total} text scans ({args.pages} per turn), image {PAGE[0]}x{PAGE[1]}, seed {args.seed}")
    print("needed \\ detected " + "".join(f"{t:>7}" for t in TURNS))
    for needed in TURNS:
        print(f"{needed:>17} " + "".join(f"{confusion[needed][f]:>7}" for f in TURNS))
    print(f"accuracy: {right}/{total} = {right / total:.1%}")
    print(f"left as they were (detected 0, needed a turn): {sum(confusion[n][0] for n in TURNS if n)}")
    print(f"wrong turns on pages that needed another turn: {wrong_turns}")
    print(f"false turns on upright pages: {args.pages - confusion[0][0]}/{args.pages}")
    for name, count in other_turns.items():
        print(f"false turns on {name} pages: {count}/{max(4, args.pages // 4)}")
    seconds.sort()
    print(f"ms per page: median {1000 * seconds[len(seconds) // 2]:.1f}, max {1000 * seconds[-1]:.1f}")
    for index, needed, result in misses[:12]:
        print(f"  miss: page {index} needed {needed}: {result}")


if __name__ == "__main__":
    main()
