"""Branching pulmonary vessel and airway trees.

Trees are grown by space colonisation: attraction points are scattered uniformly in
the lung and every point pulls the tree node nearest to it; each pulled node sprouts a
child one step towards the mean direction of its points, and points reached by the tree
are removed.  The result fills the lung from the hilum outwards with natural branching.
Radii follow the pipe (Murray) rule from the leaves back to the root,
r_parent^g = sum r_child^g, so vessels taper towards the periphery by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .layout import ChestLayout


@dataclass
class Tree:
    nodes: np.ndarray  # (M, 3) mm, (zeta, y, x)
    parent: np.ndarray  # (M,) index of the parent node, -1 for roots
    radius: np.ndarray  # (M,) mm, radius of the segment ending at the node

    def segments(self):
        """(start, end, r_start, r_end) of every parent->child segment."""
        child = np.flatnonzero(self.parent >= 0)
        par = self.parent[child]
        return self.nodes[par], self.nodes[child], self.radius[par], self.radius[child]


def sample_in_lungs(layout: ChestLayout, rng: np.random.Generator, n: int, side: int, zeta_range) -> np.ndarray:
    """``n`` points uniformly inside one lung (1 right, 2 left), by rejection."""
    lo = np.array([zeta_range[0], layout.cav_yc - layout.cav_b, -layout.cav_a if side == 1 else 0.0])
    hi = np.array([zeta_range[1], layout.cav_yc + layout.cav_b, 0.0 if side == 1 else layout.cav_a])
    found = []
    total = 0
    for _ in range(40):
        p = rng.uniform(lo, hi, size=(max(4 * n, 256), 3))
        p = p[layout.lung_side(p[:, 0], p[:, 1], p[:, 2]) == side]
        found.append(p)
        total += len(p)
        if total >= n:
            break
    pts = np.concatenate(found)
    return pts[:n]


def grow_tree(roots: np.ndarray, attractors: np.ndarray, step: float, kill: float, max_iter: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Space colonisation with unlimited influence radius; returns nodes and parents."""
    nodes = [np.asarray(roots, float).reshape(-1, 3)]
    parents = [np.full(len(nodes[0]), -1)]
    all_nodes = nodes[0]
    attractors = np.asarray(attractors, float)
    for _ in range(max_iter):
        if len(attractors) == 0:
            break
        tree = cKDTree(all_nodes)
        _, nearest = tree.query(attractors)
        pull = attractors - all_nodes[nearest]
        pull /= np.linalg.norm(pull, axis=1, keepdims=True) + 1e-9
        growing, inverse = np.unique(nearest, return_inverse=True)
        direction = np.zeros((len(growing), 3))
        np.add.at(direction, inverse, pull)
        norm = np.linalg.norm(direction, axis=1)
        ok = norm > 1e-3
        new = all_nodes[growing[ok]] + step * direction[ok] / norm[ok, None]
        # A node pulled equally from two sides would sprout on top of an existing node.
        dist, _ = tree.query(new)
        fresh = dist > 0.3 * step
        if not fresh.any():
            break
        new, par = new[fresh], growing[ok][fresh]
        nodes.append(new)
        parents.append(par)
        all_nodes = np.concatenate([all_nodes, new])
        reached, _ = cKDTree(new).query(attractors)
        attractors = attractors[reached > kill]
    return all_nodes, np.concatenate(parents)


def pipe_radii(parent: np.ndarray, leaf_radius: float, exponent: float) -> np.ndarray:
    """Radius of every node from the leaves up (children always follow their parent)."""
    flow = np.zeros(len(parent))
    radius = np.zeros(len(parent))
    for i in range(len(parent) - 1, -1, -1):
        radius[i] = flow[i] ** (1.0 / exponent) if flow[i] > 0 else leaf_radius
        if parent[i] >= 0:
            flow[parent[i]] += radius[i] ** exponent
    return radius


def vessel_trees(layout: ChestLayout, rng: np.random.Generator, density: float = 1.0) -> list[Tree]:
    """Two trees per lung (arterial from the upper hilum, venous from the lower hilum),
    each filling the whole lung with its own attraction points."""
    s = layout.scale
    zeta_range = (layout.dome_r - layout.recess, layout.apex)
    trees = []
    for side, hilum in ((1, layout.hilum_r), (2, layout.hilum_l)):
        for offset in (np.array([12 * s, -6 * s, 0.0]), np.array([-18 * s, 8 * s, 0.0])):
            n_points = int(density * rng.uniform(1000, 1300) * s**1.5)
            pts = sample_in_lungs(layout, rng, max(n_points, 20), side, zeta_range)
            nodes, parent = grow_tree(hilum + offset, pts, step=3.5 * s, kill=4.0 * s)
            radius = pipe_radii(parent, leaf_radius=rng.uniform(0.6, 0.75), exponent=3.0)
            trees.append(Tree(nodes, parent, radius))
    return trees


def airway_tree(layout: ChestLayout, rng: np.random.Generator) -> list[Tree]:
    """Trachea + main bronchi (fixed tubes) and a coarser colonised bronchial tree per lung."""
    s = layout.scale
    zeta_range = (layout.dome_r - 0.5 * layout.recess, layout.apex - 10 * s)
    trachea_r = rng.uniform(7.5, 9.5) * s
    trachea_y = layout.cav_yc - 0.05 * layout.cav_b
    carina = np.array([layout.carina, trachea_y, 0.0])
    top = np.array([layout.top_of_thorax + 200 * s, trachea_y, 0.0])
    trees = [Tree(np.array([top, carina]), np.array([-1, 0]), np.array([trachea_r, trachea_r]))]
    for side, hilum in ((1, layout.hilum_r), (2, layout.hilum_l)):
        pts = sample_in_lungs(layout, rng, int(rng.uniform(60, 90)), side, zeta_range)
        nodes, parent = grow_tree(hilum, pts, step=7.0 * s, kill=9.0 * s)
        radius = pipe_radii(parent, leaf_radius=0.9 * max(s, 0.6), exponent=3.0)
        main = 0.75 * trachea_r
        trees.append(Tree(np.array([carina, hilum]), np.array([-1, 0]), np.array([main, min(main, radius[0])])))
        trees.append(Tree(nodes, parent, radius))
    return trees
