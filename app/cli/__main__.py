"""``python -m app.cli``: the robustdx command."""

from app.cli.main import main

main()
