"""Freeze units: the model as an ordered list of the pieces that freeze together.

The order is the order in which the pieces *run*, found by tracing one forward pass with hooks,
because registration order (what ``named_modules`` gives) can differ from execution order and a
"frozen prefix" only saves backward work if it really is a prefix of the computation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
from torch import nn

from .errors import ConfigError, FrostlineError, ModelError, check_int

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
GRANULARITIES = ("block", "leaf")
PLAIN_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class FreezeUnit:
    """One piece of the model that is frozen as a whole (a block, a stem, a head, a conv+BN)."""

    name: str
    module_names: list[str]
    modules: list[nn.Module] = field(repr=False)
    params: list[nn.Parameter] = field(repr=False)
    param_names: list[str] = field(repr=False)
    #: How many units :func:`merge_head` made this one of (1: not merged): a head merged once must
    #: not be merged again, and a saved run's head is checked against the ``head_units`` it resumes with.
    head_of: int = field(default=1, repr=False)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)


def _own_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return list(module.named_parameters(recurse=False))


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def _no_hook(*_args) -> None:
    """What a copy of a model gets in place of a recorder's hook (see :class:`_RecorderHook`)."""


def _inert_hook():
    return _no_hook


class _RecorderHook:
    """A recorder's hook that stays with the model it was put on. A copy of that model made while
    the trace waits (``copy.deepcopy``: an EMA's ``AveragedModel``; ``torch.save(model)``) gets a hook
    that does nothing: the copy's forward must not report into this recorder (its Freezer would set
    itself up a second time, or crash), and a closure cannot be pickled."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __deepcopy__(self, memo):
        return _no_hook

    def __reduce__(self):
        return _inert_hook, ()


class ExecutionOrderRecorder:
    """Records module execution order during the *next* forward of ``model``, then detaches and
    calls ``on_done(order)`` (if given) when the model's own ``forward`` returns.

    Lets :class:`~frostline.Freezer` find units lazily from the user's own first training batch,
    so plain-PyTorch use needs no example input; :func:`trace_execution_order` is the same
    recorder around one pass on an example batch.
    """

    def __init__(self, model: nn.Module, on_done=None):
        self.order: list[str] = []
        #: name -> [when it first started, when it last returned], counted in module starts: a
        #: module that returned before another started (``spans[a][1] < spans[b][0]``) ran wholly before it
        self.spans: dict[str, list[int]] = {}
        self._starts = 0
        self._seen: set[str] = set()
        self._handles = []
        self._on_done = on_done
        for name, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(_RecorderHook(self._make_hook(name))))
            self._handles.append(module.register_forward_hook(_RecorderHook(self._make_end_hook(name))))
        self._handles.append(model.register_forward_hook(_RecorderHook(self._finish)))

    def _make_hook(self, name):
        def hook(_module, _args):
            if not name and name in self.spans:  # the model runs again: a first pass stopped part way
                self.spans, self._starts = {}, 0  # (an activation cache's capture): keep the whole one
            self._starts += 1
            if name not in self.spans:
                self.spans[name] = [self._starts, self._starts]
            if name not in self._seen:
                self._seen.add(name)
                self.order.append(name)

        return hook

    def _make_end_hook(self, name):
        def hook(_module, _args, _output):
            if name in self.spans:
                self.spans[name][1] = self._starts

        return hook

    def _finish(self, _module, _args, _output):
        self.detach()
        if self._on_done is not None:
            self._on_done(self.order)

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles = []


def trace_execution_order(model: nn.Module, example_input) -> list[str]:
    """Names of the modules of ``model`` in the order their forward first starts, from one pass.

    The pass runs under ``no_grad`` in eval mode so that it changes nothing (no BatchNorm
    statistics move, no dropout draws); training mode is restored afterwards.
    """
    recorder = ExecutionOrderRecorder(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_input, dict):
                model(**example_input)
            elif isinstance(example_input, (tuple, list)):
                model(*example_input)
            else:
                model(example_input)
    except FrostlineError:
        raise  # frostline's own word, from a hook this forward ran (a Freezer set up by its first forward)
    except Exception as e:  # the user's forward on the user's batch: say which input, keep the cause
        how = ("model(**example_input)" if isinstance(example_input, dict) else "model(*example_input)"
               if isinstance(example_input, (tuple, list)) else "model(example_input)")
        raise ModelError(f"the model's forward failed on example_input, called as {how}: {type(e).__name__}: "
                         f"{str(e)[:300]}. Pass one batch as the model takes it (a tuple or list is spread into "
                         "positional arguments, a dict into keyword arguments)") from e
    finally:
        recorder.detach()
        model.train(was_training)
    return recorder.order


def _split_leaf_sequence(prefix: str, module: nn.Module) -> list[list[str]]:
    """Group a flat run of leaves (conv, BN, ReLU, pool, ...) into units: a new unit starts at
    every parameter-owning leaf that is not a normalisation layer, so a conv keeps its BN."""
    groups: list[list[str]] = []
    for child_name, child in module.named_children():
        full = f"{prefix}.{child_name}" if prefix else child_name
        starts_unit = _has_params(child) and not isinstance(child, NORM_TYPES)
        if starts_unit or not groups:
            groups.append([full])
        else:
            groups[-1].append(full)
    return groups


def _holds_block_stack(module: nn.Module) -> bool:
    """True if ``module`` has, anywhere below it, an ``nn.ModuleList`` of at least two blocks
    (non-leaf modules with parameters): a wrapper such as a Hugging Face ``BertModel``, whose
    ``encoder.layer`` list holds the real blocks, rather than a block of its own."""
    for m in module.modules():
        if type(m) is nn.ModuleList:
            blocks = [c for c in m.children() if not _is_leaf(c) and _has_params(c)]
            if len(blocks) >= 2:
                return True
    return False


def _block_candidates(prefix: str, module: nn.Module) -> list[list[str]]:
    """Module-name groups at "block" granularity: descend through sequence containers, stop at
    the first module that is a block of its own (a custom module, or a leaf with parameters).
    Custom modules that wrap a stack of blocks (:func:`_holds_block_stack`) are looked into, so
    a Hugging Face model splits into embeddings, each layer, and the rest."""
    groups: list[list[str]] = []
    children = list(module.named_children())
    if children and all(_is_leaf(c) for _, c in children):
        return _split_leaf_sequence(prefix, module)
    for child_name, child in children:
        full = f"{prefix}.{child_name}" if prefix else child_name
        # Only *plain* containers are looked into: a subclass (ConvBNAct, Head, a stage class)
        # is a block its author named, so it stays whole.
        if type(child) in PLAIN_CONTAINERS or _holds_block_stack(child):
            groups.extend(_block_candidates(full, child))
        else:
            groups.append([full])
    return groups


def _unwrapped(model: nn.Module) -> tuple[str, nn.Module]:
    """The module whose children are the model's blocks, and its name: ``model`` itself, unless
    ``model`` is a wrapper whose parameters all sit in one child (a LightningModule holding
    ``self.model``, a user's module around a timm or torchvision network), which is looked into,
    as often as it is wrapped. Without this, such a network (stages of blocks in plain
    ``nn.Sequential``, no ``nn.ModuleList``) would be a block of its own, one unit, and nothing
    would ever freeze."""
    name, module = "", model
    while True:
        holders = [(n, c) for n, c in module.named_children() if _has_params(c)]
        if len(holders) != 1 or _is_leaf(holders[0][1]) or next(module.parameters(recurse=False), None) is not None:
            return name, module
        child_name, module = holders[0]
        name = f"{name}.{child_name}" if name else child_name


def _leaf_candidates(model: nn.Module) -> list[list[str]]:
    """Every parameter-owning leaf is a unit (normalisation layers are merged later into the
    unit that runs just before them, so conv + BN stay together)."""
    return [[name] for name, m in model.named_modules() if _is_leaf(m) and _has_params(m)]


def _resolve_explicit(model: nn.Module, units: Sequence) -> list[list[str]]:
    modules = dict(model.named_modules())
    groups = []
    for u in units:
        names = _names_of_unit(u)
        missing = [n for n in names if n not in modules]
        if missing:
            known = [n for n in modules if n][:12]
            raise ModelError(
                f"unit module name(s) {missing} do not exist in the model; names look like "
                f"{known}{' ...' if len(modules) > 13 else ''} (see model.named_modules())"
            )
        groups.append(names)
    _check_disjoint(groups)
    return groups


def _names_of_unit(unit) -> list[str]:
    """One entry of ``units=``: a module name or a list of them, else a ModelError saying what to pass
    (a module object or an index would fail deep inside with "not iterable")."""
    if isinstance(unit, str):
        return [unit]
    if isinstance(unit, (list, tuple)) and all(isinstance(n, str) for n in unit):
        return list(unit)
    raise ModelError(f"a unit must be a module name (a string from model.named_modules(), e.g. 'layer1') or a "
                     f"list of them, got {type(unit).__name__} {unit!r:.60}: pass names, not modules or indices")


def _check_disjoint(groups: Sequence[Sequence[str]]) -> None:
    """No module may be in two units, directly or through a parent: its parameters would be."""
    owner: dict[str, int] = {}
    for i, g in enumerate(groups):
        for n in g:
            if n in owner:
                raise ModelError(f"module {n or '<root>'!r} is listed in two units ({owner[n]} and {i}): "
                                 "every module belongs to one unit")
            owner[n] = i
    for n, i in owner.items():
        for m, j in owner.items():
            if n != m and (n == "" or m.startswith(n + ".")):
                raise ModelError(f"unit {i} holds {n or '<root>'!r}, which contains {m!r} of unit {j}: units overlap; "
                                 f"list {m!r} or its parent, not both")


def _first_run(names: Iterable[str], position: dict[str, int]) -> int:
    """Earliest execution position of any module in ``names`` or below them."""
    best = None
    for n in names:
        prefix = n + "."
        for m_name, pos in position.items():
            if m_name == n or m_name.startswith(prefix) or n == "":
                if best is None or pos < best:
                    best = pos
    return best if best is not None else -1


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile(model)`` wraps (it shares its parameters), else ``model``.
    Units are found, named and frozen on it: the wrapper has one child, ``_orig_mod``."""
    while hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
        model = model._orig_mod
    return model


def freeze_units(
    model: nn.Module,
    granularity: str = "block",
    units: Sequence | None = None,
    example_input=None,
    execution_order: Sequence[str] | None = None,
    head_units: int = 1,
) -> list[FreezeUnit]:
    """Split ``model`` into ordered freeze units; the last unit is the head.

    ``head_units`` (default 1) makes the last that many units one head, which keeps training
    (:func:`merge_head`): the usual fine-tuning choice of leaving the top blocks trainable.

    ``units`` (a list of module names, or of lists of names) overrides the automatic split; it
    must list the units in the order they run, each module once, and cover every module that ran
    with trainable parameters (:func:`check_units`). The order comes from a traced forward pass:
    give ``example_input`` (one batch) or an ``execution_order`` already recorded. Modules that
    never run in that pass are left out (they get no gradient anyway), and so are automatic units
    with nothing trainable (a LoRA model's base layers): a policy counts only units it can freeze.
    Parameters owned directly by container modules (a ViT's ``cls_token``) join the first unit
    below that container in execution order; a parameter used by two units (tied weights) belongs
    to the last of them (:func:`_build_units`). A compiled model is split as the model it wraps.
    """
    if granularity not in GRANULARITIES:
        raise ModelError(f"unknown granularity {granularity!r}; use one of {list(GRANULARITIES)}")
    model = unwrap_compiled(model)
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(
            "the model has no trainable parameters (none with requires_grad=True): there is "
            "nothing to train or freeze"
        )
    if execution_order is None:
        if example_input is None:
            raise ModelError(
                "freeze_units needs the forward order: pass example_input= (one batch) or "
                "execution_order= (from trace_execution_order)"
            )
        execution_order = trace_execution_order(model, example_input)
    if units is not None:
        built = units_from_names(model, _resolve_explicit(model, units))
        check_units(model, built, execution_order)
        return merge_head(built, head_units)
    position = {name: i for i, name in enumerate(execution_order)}
    modules = dict(model.named_modules())
    groups = _block_candidates(*_unwrapped(model)) if granularity == "block" else _leaf_candidates(model)
    if not groups:  # a single leaf model
        groups = [[""]]
    ran = [g for g in groups if _first_run(g, position) >= 0 and _group_params(modules, g)]
    ran.sort(key=lambda g: _first_run(g, position))
    # A group that is only normalisation layers joins the unit that ran just before it, so a
    # conv and its BatchNorm freeze together even when they are siblings of bigger blocks.
    merged: list[list[str]] = []
    for g in ran:
        if merged and all(isinstance(modules[n], NORM_TYPES) for n in g):
            merged[-1].extend(g)
        else:
            merged.append(g)
    built = [u for u in _build_units(model, merged) if any(p.requires_grad for p in u.params)]
    if not built:
        raise ModelError("no module with trainable parameters ran in the traced forward pass")
    if len(built) < 3:
        warnings.warn(
            f"the model splits into only {len(built)} freeze unit(s) {[u.name for u in built]}, and the last (the "
            "head) never freezes, so freezing can save little: name the units yourself (units=[...], module "
            "names in the order they run) or split finer (granularity='leaf')", stacklevel=2)
    return merge_head(built, head_units)


def check_head_units(head_units) -> int:
    """``head_units`` as an int >= 1, else one ConfigError: checked where it is given (the Freezer,
    the callbacks), not at the first forward that finds the units."""
    return check_int(head_units, "head_units (how many of the last units form the head that keeps training)", low=1)


def merge_head(units: list[FreezeUnit], head_units: int) -> list[FreezeUnit]:
    """``units`` with the last ``head_units`` of them made one unit, the head. The head never
    freezes (unless the Freezer is told ``freeze_head=True``), so the units merged into it keep
    training however early a method would have frozen them: the fine-tuning habit of leaving the
    top blocks trainable, which are also the cheapest to keep (the fewest positions, the least
    activation memory). Every policy sees one unit fewer; nothing else changes."""
    head_units = check_head_units(head_units)
    if head_units == 1:
        return list(units)
    if units and units[-1].head_of > 1:  # units from freeze_units(..., head_units=k) handed to a Freezer(head_units=n)
        raise ConfigError(f"these units' head {units[-1].name!r} already merges the last {units[-1].head_of} units "
                          f"(freeze_units(..., head_units={units[-1].head_of})): head_units={head_units} would merge "
                          "it again with the units before it; pass head_units once, to freeze_units or to the Freezer")
    if head_units >= len(units):
        raise ConfigError(f"head_units={head_units} would make all {len(units)} units of the model the head, leaving "
                          f"nothing to freeze: use at most {len(units) - 1} (units: "
                          f"{', '.join(u.name for u in units[:8])}{' ...' if len(units) > 8 else ''})")
    top = units[-head_units:]
    head = FreezeUnit(name="+".join(u.name for u in top), module_names=[n for u in top for n in u.module_names],
                      modules=[m for u in top for m in u.modules], params=[p for u in top for p in u.params],
                      param_names=[n for u in top for n in u.param_names], head_of=sum(u.head_of for u in top))
    return list(units[:-head_units]) + [head]


def check_units(model: nn.Module, units: Sequence[FreezeUnit], execution_order: Sequence[str],
                frozen: Iterable[int] = ()) -> None:
    """Units named by the user, checked against one traced forward: each ran, they are listed in
    the order they run, none but those in ``frozen`` (frozen since they were named) is without a
    trainable parameter, and no module that ran with trainable parameters is left out (it would
    train on, unseen by the policy). A :class:`ModelError` names the problem."""
    position = {name: i for i, name in enumerate(execution_order)}
    firsts = [_first_run(u.module_names, position) for u in units]
    not_run = [u.module_names for u, f in zip(units, firsts) if f < 0]
    if not_run:
        raise ModelError(f"unit(s) {not_run} never ran in the traced forward pass: leave them out")
    for (a, fa), (b, fb) in zip(zip(units, firsts), zip(units[1:], firsts[1:])):
        if fb < fa:
            order = [u.name for _, u in sorted(zip(firsts, units), key=lambda t: t[0])]
            raise ModelError(f"units are not listed in the order they run: {b.name!r} runs before {a.name!r}; "
                             f"list them as {order}")
    frozen = set(frozen)
    empty = [u.name for i, u in enumerate(units) if i not in frozen and not any(p.requires_grad for p in u.params)]
    if empty:
        raise ModelError(f"unit(s) {empty} hold no trainable parameter of their own (frozen already, or tied to a "
                         "later unit's): leave them out")
    covered = {id(p) for u in units for p in u.params}
    modules = dict(model.named_modules())
    left = [n for n in execution_order if n in modules
            and any(p.requires_grad and id(p) not in covered for _, p in _own_params(modules[n]))]
    if left:
        raise ModelError(f"module(s) {left[:8]}{' ...' if len(left) > 8 else ''} ran with trainable parameters but "
                         "belong to no unit: add them to a unit (or freeze them yourself with requires_grad_(False))")


def _group_params(modules: dict[str, nn.Module], names: Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    out, seen = [], set()
    for n in names:
        for pn, p in modules[n].named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                out.append((f"{n}.{pn}" if n else pn, p))
    return out


def _build_units(model: nn.Module, groups: Sequence[Sequence[str]]) -> list[FreezeUnit]:
    """Turn ordered module-name groups into units, giving container-owned parameters a home.

    A parameter two groups use (GPT-2's head *is* its token embedding) belongs to the last one:
    freezing the embedding must not freeze the head's weight, which still needs its gradient, and
    no parameter may be frozen (or left in the optimizer) twice.
    """
    modules = dict(model.named_modules())
    params = [_group_params(modules, g) for g in groups]
    last = {id(p): i for i, ps in enumerate(params) for _, p in ps}
    params = [[(n, p) for n, p in ps if last[id(p)] == i] for i, ps in enumerate(params)]
    covered = set(last)
    for owner_name, owner in modules.items():
        extras = [(pn, p) for pn, p in _own_params(owner) if id(p) not in covered]
        if not extras:
            continue
        # the first unit (in execution order) that lives under this owner
        for i, g in enumerate(groups):
            if owner_name == "" or all(n.startswith(owner_name + ".") for n in g):
                for pn, p in extras:
                    params[i].append((f"{owner_name}.{pn}" if owner_name else pn, p))
                    covered.add(id(p))
                break
    units = []
    for g, ps in zip(groups, params):  # a unit may be left empty (tied to a later one): callers decide
        units.append(FreezeUnit(name=g[0] or "model", module_names=list(g), modules=[modules[n] for n in g],
                                params=[p for _, p in ps], param_names=[n for n, _ in ps]))
    return units


def units_from_names(model: nn.Module, groups: Sequence[Sequence[str]]) -> list[FreezeUnit]:
    """Rebuild units from saved module-name groups, in the saved order (resume needs no trace)."""
    model = unwrap_compiled(model)
    groups = [_names_of_unit(g) for g in groups]
    _resolve_explicit(model, groups)
    return _build_units(model, groups)
