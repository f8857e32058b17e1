"""Progress bars for long jobs (map builds, localization, bag writing): one factory the
CLI and the demo pass to the library's ``progress`` arguments."""

from __future__ import annotations


def progress_bar():
    """A ``progress(iterable, desc=..., initial=..., total=...)`` callable drawing tqdm bars
    that disappear when done."""
    from tqdm import tqdm

    def bar(it=None, desc="", initial=0, total=None, **kw):
        return tqdm(it, desc=desc, initial=initial, total=total, dynamic_ncols=True, leave=False, **kw)

    return bar
