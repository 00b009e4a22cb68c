"""Mutation check: do the core tests notice small bugs in the model code?

    python tools/dev/mutation_check.py                    # seeded sample
    python tools/dev/mutation_check.py --per-file 0       # every mutant
    python tools/dev/mutation_check.py lors_det/efficient/tied.py --list

A mutant is one small change to one file of ``lors_det/lors`` or
``lors_det/models``: an operator flipped (``+``/``-``, ``*``/``/``, a
comparison, ``and``/``or``), a term dropped (``a + b`` -> ``a``), a ``not``,
minus sign, ``.detach()`` or a ``linear`` bias dropped, two ``permute`` axes
swapped, a number changed (0 -> 1, n -> n + 1, x -> 2x) or a boolean
flipped, a statement deleted (a call such as an init, an in-place update, a
``raise`` guard). Docstrings, error messages, annotations, ``extra_repr``
and ``super().__init__()`` are not mutated.

Mutants are applied one at a time to a private copy of the repository (the
working tree is never written), and the file is restored after each one,
also on Ctrl-C or SIGTERM. The core tests (``tests/lors``, then
``tests/models``; the ``slow`` and ``cuda`` ones left out) run on it with
``-x`` and a per-mutant timeout, in a process forked from one that has
already imported torch and mmdet (so a run costs the tests, not the
imports); one thread, as on a shared CPU. A failing run kills the mutant.
Survivors are listed; those in ``EQUIVALENT`` (same behaviour, with the
reason) are not counted. The score is killed / (mutants - equivalent).
"""
import argparse
import ast
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

os.environ.setdefault('OMP_NUM_THREADS', '1')

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_DIRS = ('lors_det/lors', 'lors_det/efficient', 'lors_det/models')
#: files whose tests are the tools' (tests/tools), not the core tests
NOT_TARGETED = {
    'lors_det/models/deploy.py', 'lors_det/models/official_keys.py',
    'lors_det/models/param_counts.py', 'lors_det/efficient/lorita_compress.py'
}
COPIED = ('lors_det', 'tests', 'configs', 'projects', 'tools', 'setup.py',
          'setup.cfg')
CORE_TESTS = ['tests/lors', 'tests/efficient', 'tests/models']
#: the tests that exercise a file most directly run first (-x stops there)
FIRST_TESTS = {
    'efficient/lorita.py': ['tests/efficient/test_tied_lorita.py'],
    'efficient/tied.py': ['tests/efficient/test_tied_lorita.py'],
    'models/dense_heads/initial_query_generator.py':
    ['tests/models/test_query_generator.py'],
    'models/detectors/adamixer.py':
    ['tests/models/test_detector.py', 'tests/models/test_lors_merge.py'],
    'models/layers/': ['tests/models/test_layers.py'],
    'models/layers/ffn.py': ['tests/models/test_decoder_stage.py'],
    'models/necks/': ['tests/models/test_defaults.py'],
    'models/roi_heads/adamixer_decoder.py':
    ['tests/models/test_detector.py', 'tests/models/test_batching.py'],
    'models/roi_heads/adamixer_decoder_stage.py':
    ['tests/models/test_decoder_stage.py'],
    'models/roi_heads/set_criterion.py':
    ['tests/models/test_batching.py', 'tests/models/test_detector.py'],
}
PYTEST_ARGS = [
    '-x', '-q', '-p', 'no:cacheprovider', '-m', 'not slow and not cuda'
]
IGNORED: List[str] = []  # test files left out (--ignore)

#: Mutant.key -> why the behaviour is the same (the line's text, not its
#: number, so that edits elsewhere in the file keep the entry valid)
# yapf: disable
EQUIVALENT: Dict[Tuple[str, str, int, str], str] = {
    ('lors_det/lors/lorst.py',
     'if A.shape[0] == 0:  # shared-only ablation', 19, '1'):
    'A.shape[1] (in_features) is never 0: the shared-only shortcut is '
    'skipped and the Function computes the same with an empty A',
    ('lors_det/models/dense_heads/initial_query_generator.py',
     'nn.init.constant_(self.init_proposal_bboxes.weight[:, :2], 0.5)', 63,
     '3'):
    'the next statement sets columns 2: to 1.0, over column 2',
    ('lors_det/models/dense_heads/initial_query_generator.py',
     'cxcywh[:, :2] + 0.5 * cxcywh[:, 2:]], dim=-1)', 68, '1'):
    'dim=1 is dim=-1 for the 2-D (N, 2) halves',
    ('lors_det/models/dense_heads/initial_query_generator.py',
     'content = torch.layer_norm(content, content.shape[-1:])', 58, '1'):
    'the embedding table is 2-D: shape[1:] is shape[-1:]',
    ('lors_det/models/dense_heads/initial_query_generator.py',
     "[m['img_shape'][:2] for m in batch_img_metas])  # (B, 2) h, w", 29,
     '3'):
    "mmdet's img_shape is (h, w): [:3] is [:2]",
    ('lors_det/models/layers/adaptive_mixing.py',
     'P_in, c, P_out = int(x.shape[-2]), int(M.shape[-1]), int(S.shape[-2])',
     52, '2'):
    'M is square (c x c): shape[-2] is shape[-1]',
    ('lors_det/models/layers/xyzr.py',
     'wh = xyxy[..., 2:4] - xyxy[..., 0:2]', 21, '5'):
    'boxes have 4 coordinates: 2:5 is 2:4',
    ('lors_det/models/roi_heads/set_criterion.py',
     'pred = InstanceData(scores=cls_score[i].detach(),', 39, 'cls_score[i]'):
    'the assigner returns indices: no gradient flows through its inputs',
    ('lors_det/models/roi_heads/set_criterion.py',
     'bboxes=boxes[i].detach())', 39, 'boxes[i]'):
    'the assigner returns indices: no gradient flows through its inputs',
    ('lors_det/models/roi_heads/set_criterion.py',
     "h, w = sample.metainfo['img_shape'][:2]", 49, '3'):
    "mmdet's img_shape is (h, w): [:3] is [:2]",
    ('lors_det/models/detectors/adamixer.py',
     'h, w = batch_inputs.shape[-2:]', 38, '2'):
    'the images are 4-D (B, 3, H, W): shape[2:] is shape[-2:]',
}
# yapf: enable

SWAP_BINOP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult
}
SWAP_CMP = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In
}
SKIPPED_FUNCTIONS = {'extra_repr', '__repr__'}
SKIPPED_KEYWORDS = {'inplace'}  # in-place or not: same values


@dataclass
class Mutant:
    path: str  # relative to the repository
    line: int
    kind: str
    before: str  # the mutated code, before and after
    after: str
    start: int  # byte offsets of the replaced span in the file
    end: int
    replacement: str
    line_text: str  # the (first) line mutated, stripped
    col: int  # where on that line
    status: str = ''
    seconds: float = 0.0

    @property
    def key(self) -> Tuple[str, str, int, str]:
        return self.path, self.line_text, self.col, self.after

    def describe(self) -> str:
        return (f'{self.path}:{self.line} [{self.kind}] '
                f'{self.before}  ->  {self.after}')


def _short(node: ast.AST) -> str:
    text = ast.unparse(node).replace('\n', ' ')
    return text if len(text) < 70 else text[:67] + '...'


def _calls_super(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(
        func.value, ast.Call) and getattr(func.value.func, 'id', '') == 'super'


class _Sites(ast.NodeVisitor):
    """Collects the mutants of one module."""

    def __init__(self, path: str, source: bytes):
        self.path, self.source = path, source
        lines = source.splitlines(keepends=True)
        self.lines = [line.decode().strip() for line in lines]
        self.line_start = [0]
        for line in lines:
            self.line_start.append(self.line_start[-1] + len(line))
        self.mutants: List[Mutant] = []

    def _span(self, node) -> Tuple[int, int]:
        return (self.line_start[node.lineno - 1] + node.col_offset,
                self.line_start[node.end_lineno - 1] + node.end_col_offset)

    def _add(self,
             node,
             kind: str,
             new: Optional[ast.AST] = None,
             text: Optional[str] = None):
        start, end = self._span(node)
        after = text if new is None else f'({ast.unparse(new)})'
        line = self.lines[node.lineno - 1]
        self.mutants.append(
            Mutant(self.path, node.lineno, kind, _short(node),
                   after if new is None else _short(new), start, end, after,
                   line, node.col_offset))

    # regions that are not mutated
    def visit_FunctionDef(self, node):
        if node.name in SKIPPED_FUNCTIONS:
            return
        for stmt in node.body:  # annotations and decorators are skipped
            self.visit(stmt)
        for default in node.args.defaults + node.args.kw_defaults:
            if default is not None:
                self.visit(default)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for stmt in node.body:
            self.visit(stmt)

    def visit_Raise(self, node):
        pass  # the message; its guard is mutated at the `if`

    def visit_JoinedStr(self, node):
        pass

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)

    def visit_Import(self, node):
        pass

    visit_ImportFrom = visit_Import

    def visit_Assign(self, node):
        targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if '__all__' in targets:
            return
        if any(isinstance(t, ast.Subscript) for t in node.targets):
            self._add(node, 'delete', text='pass')
        self.generic_visit(node)

    def visit_Expr(self, node):
        if isinstance(node.value, ast.Constant):
            return  # docstring
        if isinstance(node.value, ast.Call) and not _calls_super(node.value):
            self._add(node, 'delete', text='pass')
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._add(node, 'delete', text='pass')
        if type(node.op) in SWAP_BINOP:
            new = ast.AugAssign(node.target, SWAP_BINOP[type(node.op)](),
                                node.value)
            self._add(node, 'operator', text=ast.unparse(new))
        self.generic_visit(node)

    def visit_If(self, node):
        if len(node.body) == 1 and isinstance(node.body[0], ast.Raise) \
                and not node.orelse:
            self._add(node, 'delete', text='pass')
        self.generic_visit(node)

    def visit_keyword(self, node):
        if node.arg in SKIPPED_KEYWORDS:
            return
        self.generic_visit(node)

    # expressions
    def visit_BinOp(self, node):
        op = type(node.op)
        if op in SWAP_BINOP:
            self._add(node, 'operator',
                      ast.BinOp(node.left, SWAP_BINOP[op](), node.right))
        if op in (ast.Add, ast.Sub):
            self._add(node, 'drop term', node.left)
        self.generic_visit(node)

    def visit_Compare(self, node):
        if len(node.ops) == 1 and type(node.ops[0]) in SWAP_CMP:
            new = ast.Compare(node.left, [SWAP_CMP[type(node.ops[0])]()],
                              node.comparators)
            self._add(node, 'comparison', new)
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        self._add(node, 'boolean', ast.BoolOp(other, node.values))
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, (ast.Not, ast.USub)):
            self._add(node, 'drop unary', node.operand)
        self.generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool):
            self._add(node, 'constant', ast.Constant(not value))
        elif isinstance(value, int):
            self._add(node, 'constant', ast.Constant(value + 1))
        elif isinstance(value, float):
            self._add(node, 'constant',
                      ast.Constant(value * 2 if value else 1.0))

    def visit_Call(self, node):
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr == 'detach' and not node.args:
                self._add(node, 'drop detach', func.value)
            if func.attr == 'linear' and len(node.args) == 3:
                self._add(node, 'drop bias',
                          ast.Call(func, node.args[:2], node.keywords))
            if func.attr == 'permute' and len(node.args) > 1:
                for i in range(len(node.args) - 1):
                    args = list(node.args)
                    args[i], args[i + 1] = args[i + 1], args[i]
                    self._add(node, 'swap axes',
                              ast.Call(func, args, node.keywords))
        self.generic_visit(node)


def collect(path: str) -> List[Mutant]:
    """All mutants of ``path`` (relative to the repository), in file order."""
    with open(os.path.join(REPO, path), 'rb') as f:
        source = f.read()
    sites = _Sites(path, source)
    sites.visit(ast.parse(source))
    return sorted(sites.mutants, key=lambda m: (m.start, m.kind, m.after))


def target_files(patterns: List[str]) -> List[str]:
    files = []
    for top in TARGET_DIRS:
        for root, _, names in os.walk(os.path.join(REPO, top)):
            files += [
                os.path.relpath(os.path.join(root, n), REPO) for n in names
                if n.endswith('.py') and n != '__init__.py'
            ]
    files = sorted(f for f in files if f not in NOT_TARGETED)
    if patterns:
        files = [f for f in files if any(p in f for p in patterns)]
    return files


def preload() -> None:
    """Import what every test run needs except lors_det itself, once."""
    import mmdet.models  # noqa: F401
    import mmdet.structures  # noqa: F401
    import pytest  # noqa: F401
    import torch
    torch.set_num_threads(1)


def test_files(copy: str, path: str) -> List[str]:
    """The core test files, the most relevant to ``path`` first."""
    files = []
    for top in CORE_TESTS:
        files += sorted(
            os.path.join(top, n) for n in os.listdir(os.path.join(copy, top))
            if n.startswith('test_') and n.endswith('.py'))
    first = [
        f for key, tests in FIRST_TESTS.items() if key in path for f in tests
    ]
    first += [f for f in files if 'test_' + os.path.basename(path) in f]
    files = [f for f in files if f not in IGNORED]
    first = list(dict.fromkeys(f for f in first if f in files))
    return first + [f for f in files if f not in first]


def run_tests(copy: str, tests: List[str], timeout: float, log: str) -> str:
    """Run ``tests`` on ``copy`` in a forked child: 'passed', 'failed' or
    'timeout'."""
    pid = os.fork()
    if pid == 0:  # child: never returns
        rc = 1
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            sys.path.insert(0, copy)
            os.environ['PYTHONPATH'] = copy
            try:
                import lors_det
            except Exception:  # the mutant broke the import: killed
                os._exit(1)
            if not lors_det.__file__.startswith(copy):
                os._exit(98)
            import pytest
            rc = int(pytest.main(PYTEST_ARGS + tests))
        finally:
            os._exit(rc)
    deadline = time.time() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                if code == 98:
                    raise RuntimeError('the forked tests imported lors_det '
                                       'from outside the copy')
                return 'passed' if code == 0 else 'failed'
            if time.time() > deadline:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return 'timeout'
            time.sleep(0.1)
    except BaseException:
        try:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise


def make_copy() -> str:
    copy = tempfile.mkdtemp(prefix='lors_det-mutants-')
    for name in COPIED:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(
                src,
                os.path.join(copy, name),
                ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy2(src, copy)
    return copy


def apply(copy: str, mutant: Mutant, original: bytes) -> None:
    text = (
        original[:mutant.start] + mutant.replacement.encode() +
        original[mutant.end:])
    path = os.path.join(copy, mutant.path)
    with open(path, 'wb') as f:
        f.write(text)
    cache = os.path.join(os.path.dirname(path), '__pycache__')
    shutil.rmtree(cache, ignore_errors=True)


def restore(copy: str, mutant: Mutant, original: bytes) -> None:
    with open(os.path.join(copy, mutant.path), 'wb') as f:
        f.write(original)


def report(mutants: List[Mutant]) -> dict:
    rows, lines = {}, []
    for m in mutants:
        row = rows.setdefault(
            m.path,
            dict(mutants=0, killed=0, survived=0, equivalent=0, timeout=0))
        row['mutants'] += 1
        row[m.status] += 1
    total = {
        k: sum(r[k] for r in rows.values())
        for k in ('mutants', 'killed', 'survived', 'equivalent', 'timeout')
    }

    def score(r):
        counted = r['mutants'] - r['equivalent']
        return r['killed'] / counted if counted else 1.0

    lines.append(f'{"file":50s} {"mut":>4s} {"kill":>4s} {"surv":>4s} '
                 f'{"eq":>3s} {"t/o":>3s} {"score":>6s}')
    for path, r in sorted(rows.items()):
        lines.append(f'{path:50s} {r["mutants"]:4d} {r["killed"]:4d} '
                     f'{r["survived"]:4d} {r["equivalent"]:3d} '
                     f'{r["timeout"]:3d} {score(r):6.1%}')
    lines.append(f'{"total":50s} {total["mutants"]:4d} {total["killed"]:4d} '
                 f'{total["survived"]:4d} {total["equivalent"]:3d} '
                 f'{total["timeout"]:3d} {score(total):6.1%}')
    survivors = [m for m in mutants if m.status in ('survived', 'timeout')]
    if survivors:
        lines.append('\nsurvivors:')
        lines += [f'  {m.status:8s} {m.describe()}' for m in survivors]
    print('\n'.join(lines), flush=True)
    return dict(files=rows, total=total, score=score(total))


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        'files', nargs='*', help='only files whose path contains one of these')
    parser.add_argument(
        '--per-file',
        type=int,
        default=12,
        help='mutants sampled per file (0: all; default 12)')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of the sample (default 0)')
    parser.add_argument(
        '--timeout',
        type=float,
        default=60,
        help='seconds per mutant test run (default 60)')
    parser.add_argument(
        '--list', action='store_true', help='list the mutants and exit')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument(
        '--exclude',
        action='append',
        default=[],
        metavar='FILE',
        help='skip target files whose path '
        'contains this (repeatable)')
    parser.add_argument(
        '--ignore',
        action='append',
        default=[],
        metavar='TEST',
        help='leave this core test file out '
        '(repeatable)')
    parser.add_argument(
        '--rerun',
        metavar='JSON',
        help='only the mutants that survived or timed out '
        'in this earlier --json result (after adding tests)')
    return parser.parse_args()


def main():
    args = parse_args()
    mutants = []
    IGNORED.extend(os.path.normpath(t) for t in args.ignore)
    for path in target_files(args.files):
        if any(e in path for e in args.exclude):
            continue
        found = collect(path)
        if args.per_file and len(found) > args.per_file:
            found = random.Random(f'{args.seed}:{path}').sample(
                found, args.per_file)
            found.sort(key=lambda m: m.start)
        mutants += found
    if args.rerun:
        with open(args.rerun) as f:
            earlier = [((m['path'], m['line_text'], m['col'], m['after']),
                        m['status']) for m in json.load(f)['mutants']]
        # and those marked equivalent then but not any more
        again = {
            k
            for k, status in earlier if status in ('survived', 'timeout')
            or status == 'equivalent' and k not in EQUIVALENT
        }
        mutants = [m for m in mutants if m.key in again]
    if args.list:
        for m in mutants:
            print(m.describe())
        print(f'{len(mutants)} mutants')
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    preload()
    copy = make_copy()
    log = os.path.join(copy, 'pytest.log')
    try:
        start = time.time()
        if run_tests(copy, test_files(copy, ''), args.timeout,
                     log) != 'passed':
            sys.exit(f'the core tests do not pass unmutated (or take over '
                     f'{args.timeout:.0f} s); see {log}')
        print(
            f'unmutated core tests: {time.time() - start:.0f} s; '
            f'{len(mutants)} mutants',
            flush=True)
        for i, m in enumerate(mutants, 1):
            with open(os.path.join(copy, m.path), 'rb') as f:
                original = f.read()
            start = time.time()
            try:
                apply(copy, m, original)
                result = run_tests(copy, test_files(copy, m.path),
                                   args.timeout, log)
            finally:
                restore(copy, m, original)
            m.seconds = time.time() - start
            if result == 'failed':
                m.status = 'killed'
            elif result == 'timeout':
                m.status = 'timeout'
            else:
                m.status = ('equivalent'
                            if m.key in EQUIVALENT else 'survived')
            print(
                f'[{i}/{len(mutants)}] {m.status:10s} {m.seconds:4.0f}s '
                f'{m.describe()}',
                flush=True)
    except KeyboardInterrupt:
        print('interrupted; results so far:', flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    done = [m for m in mutants if m.status]
    summary = report(done)
    if args.json:
        summary['mutants'] = [asdict(m) for m in done]
        with open(args.json, 'w') as f:
            json.dump(summary, f, indent=1)


if __name__ == '__main__':
    main()
