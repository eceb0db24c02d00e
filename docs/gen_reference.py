"""Placeholder: replaced by the generated reference (lead is writing it)."""
import mkdocs_gen_files

for name in ("cli", "config"):
    with mkdocs_gen_files.open(f"reference/{name}.md", "w") as f:
        f.write(f"# {name}\n")
