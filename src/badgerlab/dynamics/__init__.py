"""Learning dynamics of populations (Garnelo, Balduzzi & Czarnecki, NeurIPS 2020 tutorial).

`games` symmetric zero-sum games as matrices and functional forms, with their Hodge split;
`nash` maximin and maximum-entropy Nash (Nash averaging); `ratings` Elo and mElo_2k;
`alpharank` single- and multi-population alpha-Rank (local or Moran selection); `metrics`
exploitability and effective diversity; `psro` PSRO with meta-solver (Nash, fictitious play,
...) and response registries; `qd` MAP-Elites on pyribs; `evolution` an outer ES evolving the
reward an inner learner optimises.
"""

__all__: list[str] = []
