"""A queue worker process for the fault tests: the code path of ``parley run --workers-only`` (the same
:func:`core.ops.service.serve`), with a Delivery for the ``test`` platform that records into Redis.

Settings come from the environment only (no ``.env``): the tests set them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from core.errors import ParleyError
from core.logging import configure_logging
from core.ops.service import serve
from core.runtime import open_runtime
from core.settings import Settings
from tests.appsettings import make_app
from tests.scale.helpers import FileRecordingDelivery, RedisRecordingDelivery, scale_spec


async def run(bot: str) -> int:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    configure_logging(settings)
    async with open_runtime(scale_spec(bot), make_app(settings)) as rt:
        record = os.environ.get("PARLEY_TEST_RECORD_FILE")  # make chaos: Redis itself may be down
        delivery = FileRecordingDelivery(Path(record)) if record else RedisRecordingDelivery(rt.redis)
        rt.ops.deliveries.register("test", delivery)
        return await serve(rt, [], workers=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bot", default="arcade")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args.bot))
    except ParleyError as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
