"""``torch.compile`` for mmtlab's models, with the two settings they need.

Training reads rows chosen by data: the masked words and regions (``t[mlm_mask]``) and, with
``full_states=False``, the rows the last layer finishes (one ``nonzero`` per stream). Each is an operator
whose output size depends on values. By default dynamo breaks the graph at every one of them (a 4-layer
single-stream training forward becomes 10 graphs, and on CPU the compiled step was slower than eager);
with ``capture_dynamic_output_shape_ops`` the row count becomes a symbolic size inside the graph and the
forward with its losses is one graph, compiled once for any number of masked positions.

``freeze=True`` (inference only) adds Inductor's ``freezing``: the weights become constants of the graph and
on CPU the matmul weights are pre-packed once (up to 1.2x faster per pair, docs/performance.md). A frozen
graph does not see later weight updates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable


def compile_fn(fn: Callable, dynamic: bool | None = None, freeze: bool = False, **options) -> Callable:
    """``torch.compile(fn, dynamic=dynamic, **options)``, called under the settings above (dynamo and Inductor
    read them when they compile a graph: on the first call and on recompiles).

    Should compiling with the data-dependent sizes in the graph fail (a torch version or backend that cannot
    generate code for them), it warns once and compiles with graph breaks at those operators instead."""
    import torch._dynamo.config
    import torch._inductor.config

    state = {"compiled": torch.compile(fn, dynamic=dynamic, **options), "capture": True}

    def run(*args, **kwargs):
        with (
            torch._dynamo.config.patch(capture_dynamic_output_shape_ops=state["capture"]),
            torch._inductor.config.patch(freezing=freeze),
        ):
            try:
                return state["compiled"](*args, **kwargs)
            except torch._dynamo.exc.TorchDynamoException as e:
                if not state["capture"]:
                    raise
                first = (str(e).strip().splitlines() or [""])[0][:300]
                warnings.warn(
                    f"torch.compile with data-dependent sizes inside the graph failed ({type(e).__name__}: "
                    f"{first}); compiling with graph breaks at them instead",
                    stacklevel=2,
                )
                state.update(compiled=torch.compile(fn, dynamic=dynamic, **options), capture=False)
        return run(*args, **kwargs)

    return run
