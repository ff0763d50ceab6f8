"""Reports that put prompting and fine-tuning side by side.

Contract: :mod:`.load` reads label and distill run folders and matches each student with its teacher;
:mod:`.costs` prices each run on a stated basis (list price, local, machine time) or says which figure
is missing; :mod:`.gold` scores runs against a separate gold file (or measures how often runs agree
without one); :mod:`.verdict` turns the rows into sentences that never conclude from a missing figure;
:mod:`.build` computes the rows and break-even volumes and writes the files; :mod:`.render` writes
HTML and Markdown; :mod:`.plots` draws the PNGs.
"""
