"""Make the "lifetime" GIF: one seed, rendered at ages 1..75 by ``/api/v1/generate``.

Face Studio's "A Lifetime in Seconds", against a facecat server. The seed fixes the
identity and only the age condition changes, so the frames show one person ageing (as far
as the generator allows: its training data has few faces over 60, and ``X-Face-Age`` tells
you what the estimator actually sees in each frame).

Needs a professional or enterprise key (``seed`` is a professional feature), and 75
generations of its budget: professional keys get 30 per minute, so the script waits out
429s using ``Retry-After``. Requires ``requests`` and ``imageio`` on the client, which
facecat itself does not depend on::

    pip install requests imageio
    FACECAT_KEY=fc_... python docs/lifetime.py --url http://127.0.0.1:5000 --seed 42 \\
        --gender female --out lifetime.gif
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time

import imageio.v3 as iio
import requests

logger = logging.getLogger("lifetime")


def fetch_frame(
    session: requests.Session, url: str, params: dict[str, str | int], max_waits: int = 10
) -> tuple[bytes, str]:
    """One frame's bytes and the age the server's estimator sees, waiting out 429s."""
    for _ in range(max_waits):
        response = session.get(f"{url}/api/v1/generate", params=params, timeout=60)
        if response.status_code == 429:
            wait = int(response.headers.get("Retry-After", "5"))
            logger.info("throttled; waiting %d s", wait)
            time.sleep(wait)
            continue
        response.raise_for_status()
        return response.content, response.headers.get("X-Face-Age", "?")
    raise RuntimeError("still throttled after waiting; try later")


def main() -> int:
    parser = argparse.ArgumentParser(description="One seed, ages 1..75, as an animated GIF.")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="facecat base URL")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--gender", choices=["male", "female"], default="female")
    parser.add_argument("--first-age", type=int, default=1)
    parser.add_argument("--last-age", type=int, default=75)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--frame-ms", type=int, default=80, help="duration of each frame")
    parser.add_argument("--out", default="lifetime.gif")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    key = os.environ.get("FACECAT_KEY")
    if not key:
        logger.error("set FACECAT_KEY to a professional or enterprise key")
        return 2
    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"
    frames = []
    for age in range(args.first_age, args.last_age + 1):
        params = {
            "seed": args.seed,
            "gender": args.gender,
            "age": age,
            "resolution": args.resolution,
            "image_format": "jpeg",
        }
        data, seen = fetch_frame(session, args.url.rstrip("/"), params)
        frames.append(iio.imread(io.BytesIO(data)))
        logger.info("age %3d: estimator sees %s", age, seen)
    iio.imwrite(args.out, frames, duration=args.frame_ms, loop=0)
    logger.info("wrote %s (%d frames)", args.out, len(frames))
    return 0


if __name__ == "__main__":
    sys.exit(main())
