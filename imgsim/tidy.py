"""Step 8, tidying near-duplicates: a keeper per group, a table to act on, a reversible move and its undo.

In each group of near-duplicates (identical files included) one image is kept by a stated rule, and every
other member is marked `remove`. `duplicates.csv` lists every member with its size, modification time and
centred score with its keeper. Nothing moves unless asked (`IMGSIM_MOVE_DUPLICATES_TO`); then each
`remove` file goes into that folder under its path relative to the image folder, never over anything
already there and never deleted, and every move is recorded there (`imgsim-moves.jsonl`) so that one
command puts them all back:

    python -m imgsim.tidy undo <folder>

A file whose size or modification time changed since it was embedded is left where it is and reported,
and so are the other members of a group whose keeper changed or is gone: the table no longer describes them.
"""

import csv
import json
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from imgsim.duplicates import KEEPER_RULE

RECORD = "imgsim-moves.jsonl"  # one line per moved file, in the folder the files were moved to
HOW_TO_UNDO = "HOW-TO-UNDO.txt"
COLUMNS = ("group", "path", "action", "width", "height", "bytes", "mtime", "score")


@dataclass(frozen=True)
class Member:
    """One row of duplicates.csv: a member of a group, what to do with it, and its score with the keeper."""

    group: int
    path: str
    action: str  # "keep" or "remove"
    width: int
    height: int
    bytes: int
    mtime_ns: int
    score: float  # centred cosine with the group's keeper (1.0 for the keeper itself)

    @property
    def mtime(self) -> str:
        return datetime.fromtimestamp(self.mtime_ns / 1e9, timezone.utc).isoformat(timespec="seconds")


@dataclass
class TidyPlan:
    """Every member of every group, the keeper first in each."""

    members: list[Member]

    @property
    def groups(self) -> list[list[str]]:
        """The groups as lists of paths, the keeper first."""
        grouped: dict[int, list[str]] = {}
        for member in self.members:
            grouped.setdefault(member.group, []).append(member.path)
        return list(grouped.values())

    @property
    def removals(self) -> list[Member]:
        return [member for member in self.members if member.action == "remove"]

    def write_table(self, path: Path) -> None:
        """duplicates.csv: one row per member, `path` relative to the image folder, `mtime` in UTC."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as out:
            table = csv.writer(out)
            table.writerow(COLUMNS)
            for m in self.members:
                table.writerow([m.group, m.path, m.action, m.width, m.height, m.bytes, m.mtime, f"{m.score:.4f}"])

    def __str__(self) -> str:
        freed = sum(member.bytes for member in self.removals)
        return (
            f"keeper: {KEEPER_RULE}\n{len(self.groups)} group(s): keep {len(self.groups)} image(s), "
            f"remove {len(self.removals)}, which would free {freed / 1e6:.1f} MB ({freed} bytes)"
        )

    def report(self, table: Path, moves: "MoveResult | None") -> dict:
        """The run report's `tidy` section."""
        return {
            "keeper_rule": KEEPER_RULE,
            "table": str(table),
            "groups": len(self.groups),
            "removals": len(self.removals),
            "bytes_freed": sum(member.bytes for member in self.removals),
            "moved_to": moves and str(moves.folder),
            "moved": len(moves.moved) if moves else 0,
            "left_changed": moves.changed if moves else [],
            "left_existing": moves.existing if moves else [],
        }


def plan_tidy(groups: list[list[str]], stored: dict[str, dict], centred_of) -> TidyPlan:
    """Each group's first image kept, the others marked remove, each scored with the one kept.

    `groups` come as `duplicate_groups` makes them from `keepers_first`: each group's keeper by KEEPER_RULE
    first. `stored` holds each image's payload (width, height, size, mtime_ns); `centred_of(keys)` their
    centred vectors.
    """
    members = []
    for number, group in enumerate(groups, 1):
        scores = centred_of(group) @ centred_of(group[:1])[0]
        for position, (key, score) in enumerate(zip(group, scores, strict=True)):
            payload = stored[key]
            action = "keep" if position == 0 else "remove"
            size = (payload["width"], payload["height"], payload["size"], payload["mtime_ns"])
            members.append(Member(number, key, action, *size, score=1.0 if position == 0 else float(score)))
    return TidyPlan(members)


@dataclass
class MoveResult:
    """What `move_duplicates` did: the paths moved, and those left because they changed or were in the way."""

    folder: Path
    moved: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # changed or gone since embedded, or their keeper did
    existing: list[str] = field(default_factory=list)  # something already at their place in `folder`

    def __str__(self) -> str:
        lines = [f"moved {len(self.moved)} file(s) to {self.folder}"]
        if self.changed:
            lines.append(f"left {len(self.changed)} that changed since they were embedded: " + ", ".join(self.changed))
        if self.existing:
            lines.append(f"left {len(self.existing)} already present in {self.folder}: " + ", ".join(self.existing))
        if self.moved:
            lines.append(f"to put them back: python -m imgsim.tidy undo {self.folder}")
        return "\n".join(lines)


def unchanged(path: Path, payload: dict) -> bool:
    """The file is still there with the size and modification time it had when it was embedded."""
    try:
        stat = path.stat()
    except OSError:
        return False
    return (stat.st_size, stat.st_mtime_ns) == (payload["size"], payload["mtime_ns"])


def move_duplicates(plan: TidyPlan, image_dir: Path, folder: Path, stored: dict[str, dict]) -> MoveResult:
    """Move every `remove` file of `plan` from `image_dir` into `folder` under its relative path, recording each move.

    Never overwrites and never deletes: a file already at the target is left in place, and so is a file (or
    every file of a group whose keeper) changed since it was embedded, by size or modification time.
    """
    result = MoveResult(folder)
    keepers = {m.group: m.path for m in plan.members if m.action == "keep"}
    for member in plan.removals:
        source, target = image_dir / member.path, folder / member.path
        keeper = keepers[member.group]
        if not (unchanged(source, stored[member.path]) and unchanged(image_dir / keeper, stored[keeper])):
            result.changed.append(member.path)
            continue
        if target.exists():
            result.existing.append(member.path)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)  # a rename on one file system; copy (times kept), then unlink across two
        with open(folder / RECORD, "a") as record:
            record.write(json.dumps({"from": str(source.resolve()), "to": member.path, "keeper": keeper}) + "\n")
        result.moved.append(member.path)
    if result.moved:
        (folder / HOW_TO_UNDO).write_text(
            f"These files were moved here from {image_dir.resolve()} as duplicates; {RECORD} lists each move.\n"
            f"To put them all back:\n\n    python -m imgsim.tidy undo {folder.resolve()}\n"
        )
    return result


@dataclass
class UndoResult:
    restored: list[str] = field(default_factory=list)  # original paths
    left: list[str] = field(default_factory=list)  # why each move could not be undone

    def __str__(self) -> str:
        return "\n".join([f"restored {len(self.restored)} file(s)", *(f"not restored: {why}" for why in self.left)])


def undo_moves(folder: Path) -> UndoResult:
    """Put every file recorded in `folder` back where it came from, never over a file that is there now.

    Moves that could not be undone stay in the record, so running it again after clearing the way finishes it.
    """
    record = folder / RECORD
    moves = [json.loads(line) for line in record.read_text().splitlines() if line.strip()] if record.exists() else []
    result, remaining = UndoResult(), []
    for move in reversed(moves):
        source, target = folder / move["to"], Path(move["from"])
        if target.exists() or not source.exists():
            why = f"{target} exists" if target.exists() else f"{source} is gone"
            result.left.append(f"{move['to']}: {why}")
            remaining.insert(0, move)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        result.restored.append(str(target))
        for parent in source.parents:  # the folders the move made, now empty
            if parent == folder or any(parent.iterdir()):
                break
            parent.rmdir()
    if remaining:
        record.write_text("".join(json.dumps(move) + "\n" for move in remaining))
    else:
        record.unlink(missing_ok=True)
        (folder / HOW_TO_UNDO).unlink(missing_ok=True)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "undo":
        sys.exit("usage: python -m imgsim.tidy undo <folder the duplicates were moved to>")
    undone = undo_moves(Path(sys.argv[2]))
    print(undone)
    sys.exit(1 if undone.left else 0)
