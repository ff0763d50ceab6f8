"""Reports that put prompting and fine-tuning side by side.

Contract: :mod:`.build` loads label and distill run folders and computes the comparison rows, break-even
volumes and the verdict; :mod:`.render` writes them as HTML and Markdown; :mod:`.plots` draws the PNGs.
"""
