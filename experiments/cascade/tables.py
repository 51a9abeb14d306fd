"""The cascaded model's ablations, DeepLabv3 Sec. 4.2 (Tables 1-3), and cascade + ASPP.

Each table is a grid of cells in the paper's layout (rows x columns), each cell one model:
its backbone depth, how many copies of block4 follow block4 (`num_cascaded_blocks`), the
output stride it trains and evaluates at, its Multi-Grid and whether ASPP sits on the last
block. The paper's figure for every cell is quoted beside it (PASCAL VOC 2012 val mIoU, %,
ResNet pretrained on ImageNet; arXiv 1706.05587v3). A cell that appears in two tables (Table
1's OS16 is Table 2's ResNet-50 block7; Table 2's ResNet-101 row is Table 3's (1, 1, 1)) is
one model, trained once.

Depths are the paper's (50, 101); a setting maps them onto its own backbones (`SETTINGS`).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

MultiGrid = tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One model of a table."""

    depth: int  # the paper's ResNet depth, 50 or 101 (a setting maps it to its own)
    num_cascaded_blocks: int  # 0: block4 alone ... 3: block4 to block7
    output_stride: int  # trained and evaluated at
    multi_grid: MultiGrid = (1, 1, 1)
    aspp: bool = False  # DeepLabv3's ASPP (with image pooling) on the last block

    @property
    def last_block(self) -> str:
        return f"block{4 + self.num_cascaded_blocks}"

    @property
    def key(self) -> str:
        """The cell's folder name: the same model has the same key in every table."""
        grid = "".join(map(str, self.multi_grid))
        return (f"r{self.depth}_{self.last_block}_os{self.output_stride}_mg{grid}"
                + ("_aspp" if self.aspp else ""))

    @property
    def label(self) -> str:
        return (f"ResNet-{self.depth} {self.last_block}{' + ASPP' if self.aspp else ''}, "
                f"OS{self.output_stride}, MG{self.multi_grid}")


@dataclasses.dataclass(frozen=True)
class Table:
    """A grid of cells in the paper's layout, with the paper's figures."""

    name: str  # the --tables key
    title: str
    row_header: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[tuple[Cell, ...], ...]  # [row][column]
    paper: tuple[tuple[Optional[float], ...], ...]  # [row][column]; None: not in the paper
    source: str  # where the paper's figures are
    trend: str  # the direction along which adjacent cells are compared ("row" or "column")

    def all_cells(self) -> list[Cell]:
        return [cell for row in self.cells for cell in row]


BLOCKS = ("block4", "block5", "block6", "block7")
TABLE1_STRIDES = (8, 16, 32, 64, 128, 256)
# Table 3's Multi-Grid rows, in the order the issue that asked for them lists them (the
# transcription of the paper we checked does not settle the printed order; the values are
# the paper's, row by row).
MULTI_GRIDS: tuple[MultiGrid, ...] = ((1, 1, 1), (1, 2, 1), (2, 2, 2), (1, 2, 3), (1, 2, 4))
COMBINATION_GRID: MultiGrid = (1, 2, 4)  # the ASPP model's (Table 5) and a Table 3 row

TABLE1 = Table(
    name="1", title="Table 1: ResNet-50 with block7 at every output stride",
    row_header="output stride", rows=("mIoU",),
    columns=tuple(map(str, TABLE1_STRIDES)),
    cells=(tuple(Cell(50, 3, stride) for stride in TABLE1_STRIDES),),
    paper=((75.18, 73.88, 70.06, 59.99, 42.34, 20.29),),
    source="DeepLabv3 Table 1 (arXiv 1706.05587v3, Sec. 4.2)", trend="row")

TABLE2 = Table(
    name="2", title="Table 2: block4 to block7 in cascade at output stride 16, two depths",
    row_header="network", rows=("ResNet-50", "ResNet-101"), columns=BLOCKS,
    cells=tuple(tuple(Cell(depth, n, 16) for n in range(4)) for depth in (50, 101)),
    paper=((64.81, 72.14, 74.29, 73.88), (68.39, 73.21, 75.34, 75.76)),
    source="DeepLabv3 Table 2 (arXiv 1706.05587v3, Sec. 4.2)", trend="row")

_TABLE3_PAPER = {(1, 1, 1): (68.39, 73.21, 75.34, 75.76), (1, 2, 1): (70.23, 75.67, 76.09, 76.66),
                 (2, 2, 2): (71.45, 74.30, 74.70, 74.62), (1, 2, 3): (73.14, 75.78, 75.96, 76.11),
                 (1, 2, 4): (73.45, 75.74, 75.85, 76.02)}
TABLE3 = Table(
    name="3", title="Table 3: Multi-Grid over the cascade depths, ResNet-101, output stride 16",
    row_header="Multi-Grid", rows=tuple(str(grid) for grid in MULTI_GRIDS), columns=BLOCKS,
    cells=tuple(tuple(Cell(101, n, 16, grid) for n in range(4)) for grid in MULTI_GRIDS),
    paper=tuple(_TABLE3_PAPER[grid] for grid in MULTI_GRIDS),
    source="DeepLabv3 Table 3 (arXiv 1706.05587v3, Sec. 4.2)", trend="row")

TABLE_ASPP = Table(
    name="aspp",
    title="Cascade and ASPP, each alone and combined: ResNet-101, OS16, Multi-Grid (1, 2, 4)",
    row_header="model", rows=("mIoU",),
    columns=("block4 (neither)", "block4 + ASPP (DeepLabv3)", "block7 (cascade)",
             "block7 + ASPP (both)"),
    cells=((Cell(101, 0, 16, COMBINATION_GRID), Cell(101, 0, 16, COMBINATION_GRID, aspp=True),
            Cell(101, 3, 16, COMBINATION_GRID), Cell(101, 3, 16, COMBINATION_GRID, aspp=True)),),
    # Table 3 (block4, block7 at (1, 2, 4)); Table 5's "MG(1, 2, 4) + ASPP(6, 12, 18) + Image
    # Pooling"; the paper gives no figure for the combination.
    paper=((73.45, 77.21, 76.02, None),),
    source="DeepLabv3 Tables 3 and 5 (arXiv 1706.05587v3); no figure for the combination",
    trend="all")

TABLES = {table.name: table for table in (TABLE1, TABLE2, TABLE_ASPP, TABLE3)}


def unique_cells(names: list[str]) -> list[Cell]:
    """The cells of tables `names`, each model once, in table order."""
    seen: dict[str, Cell] = {}
    for name in names:
        for cell in TABLES[name].all_cells():
            seen.setdefault(cell.key, cell)
    return list(seen.values())


def comparisons(table: Table) -> list[tuple[Cell, Cell]]:
    """The pairs whose difference the table reports: neighbours along its trend (each row
    left to right), or every pair (`trend='all'`)."""
    if table.trend == "all":
        cells = table.all_cells()
        return [(a, b) for i, a in enumerate(cells) for b in cells[i + 1:]]
    return [(row[i], row[i + 1]) for row in table.cells for i in range(len(row) - 1)]
