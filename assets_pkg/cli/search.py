"""`drop-studio search` and `drop-studio serve` (the search page)."""

from __future__ import annotations

import json
import sys

import click

from assets_pkg.domain.query import SORTS

from .app import TOP_K, CliError, cli, still_on_serving


@cli.command()
@click.argument("query", required=False, default="")
@click.option("--drop", help="only this drop's images")
@click.option("--top-k", type=TOP_K, default=10, show_default=True)
@click.option("--sku", help="only this product's images")
@click.option("--category", help="only this category (any case)")
@click.option("--color", help="only this colour (any case)")
@click.option("--all", "show_all", is_flag=True, help="every picture of a same-shot group (default: one)")
@click.option("--not", "not_terms", multiple=True, help="push out pictures like this term (or write -term in QUERY)")
@click.option("--min-similarity", help="only pictures at least this like the query (cosine, -1 to 1)")
@click.option("--picture", type=click.Path(exists=True, dir_okay=False), help="search by this picture, with QUERY's words")
@click.option("--sort", type=click.Choice(SORTS), default=SORTS[0], show_default=True,
              help="the results by relevance, or by when each file was added, newest first")
@click.option("--json", "as_json", is_flag=True)
def search(query: str, drop: str | None, top_k: int, sku: str | None, category: str | None, color: str | None,
           show_all: bool, not_terms: tuple[str, ...], min_similarity: str | None, picture: str | None,
           sort: str, as_json: bool) -> None:
    """Search by text: each hit's similarity to the query (cosine, CLIP), why it was found, its file and
    product, in the fused order (exact SKU, then CLIP and BM25 fused; --json has the rank score too)."""
    from assets_pkg.domain.drops import validate_drop_name
    from assets_pkg.domain.products import InvalidFilter, filter_value
    from assets_pkg.domain.settings import setting
    from assets_pkg.domain.storage import location
    from assets_pkg.resources import ClipModel, DropLibrary, MilvusResource, search_models

    from assets_pkg.domain.query import InvalidQuery, newest_first, parse_query, refine, with_words

    if not query.strip() and not picture:
        raise CliError("the search query is empty")
    try:
        terms = parse_query(query, not_terms, min_similarity, with_picture=bool(picture), sort=sort)
    except InvalidQuery as e:
        field, _, message = str(e).partition(": ")
        raise CliError(f"{ {'q': 'QUERY', 'not': '--not', 'min_similarity': '--min-similarity'}[field]}: {message}") from None
    if drop:
        validate_drop_name(drop)
    where = {f: v for f, v in (("sku", sku), ("category", category), ("color", color)) if v}
    for f, v in where.items():
        try:
            filter_value(f, v)
        except InvalidFilter as e:
            raise CliError(f"--{e}") from None
    milvus, clip = MilvusResource(), ClipModel()
    models = search_models(DropLibrary(), milvus)
    serving = models.serving  # the model search answers from; None before any drop was built
    if serving is not None and models.target is not None:
        print(f"drop-studio: {still_on_serving(models)}", file=sys.stderr)
    store = milvus.store(collection=serving.collection if serving else None)
    encoder = clip.serving_encoder(serving) if serving else clip.encoder()
    with store:
        if drop and store.count(drop) == 0:
            raise CliError(f"drop {drop!r} has no images in collection {store.collection!r} (run it first)")
        note = store.search_note()
        if note:
            print(f"drop-studio: {note}", file=sys.stderr)
        vector = encoder.embed_texts([terms.words]) if terms.words else None
        if picture:  # the picture's vector, with the words' added ("this bag, in black")
            seen = encoder.embed_image_bytes(open(picture, "rb").read())
            vector = (with_words(seen, vector[0]) if vector is not None else seen.reshape(-1))[None]
        negatives = encoder.embed_texts(list(terms.negatives)) if terms.negatives else None
        fetch = top_k if show_all and not terms.refines else 2 * top_k  # room for the hits left out
        hits = store.search(vector, drop=drop, top_k=fetch, texts=[terms.words] if terms.words else None,
                            where=where)[0]
        if terms.refines:
            hits = refine(hits, terms, negatives, store.vectors, fetch)
    if not show_all:  # one picture of each same-shot group (product_duplicates)
        from assets_pkg.domain.artifacts import DropArtifacts
        from assets_pkg.stages.duplicates.logic import collapse, collapse_index

        artifacts, groups = setting("ARTIFACTS_DIR"), {}

        def groups_of(d: str) -> dict:
            if d not in groups:
                art = DropArtifacts.at(artifacts, d)
                groups[d] = collapse_index(serving.files(art) if serving else art)
            return groups[d]

        hits = collapse(hits, groups_of, top_k)
    else:
        hits = hits[:top_k]
    root = location("DROPS_DIR", setting("DROPS_DIR"))
    rows = [{"path": str(root / h.drop / h.path), "drop": h.drop, "similarity": round(h.similarity, 4),
             "why": list(h.why), "words": list(h.words), "score": round(h.score, 4), "sku": h.sku,
             "name": h.name, "match": h.match} for h in hits]
    if terms.sort == "added":
        from assets_pkg.domain.listing import added_at, as_iso

        added = [added_at(root / h.drop / h.path) for h in hits]
        for r, t in zip(rows, added):
            if t is not None:  # as the API: a file gone since it was indexed has no time to tell
                r["added"] = as_iso(t)
        rows = newest_first(rows, added)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            product = f"  {r['sku']} {r['name']}".rstrip() if r["sku"] or r["name"] else ""
            when = f"{r.get('added', '')[:16].replace('T', ' '):<16}  " if terms.sort == "added" else ""
            print(f"{r['similarity']:.2f}  {when}{why_line(r['why'], r['words']):<24}  {r['path']}{product}")
        if not rows:
            print("no results", file=sys.stderr)


def why_line(why: list[str], words: list[str]) -> str:
    """`sku`, `words: red apple`, `picture`, joined: why a hit was found, as the page says it."""
    return " + ".join(f"words: {' '.join(words)}" if w == "words" else w for w in why)


@cli.command()
@click.option("--host", help="default SEARCH_HOST (loopback); beyond loopback only with DROP_STUDIO_TOKEN set")
@click.option("--port", type=click.IntRange(1, 65535), help="default SEARCH_PORT")
def serve(host: str | None, port: int | None) -> None:
    """The search page and JSON API for the people who pick pictures."""
    from assets_pkg.domain.settings import setting
    from assets_pkg.web.server import serve as serve_page

    serve_page(host or setting("SEARCH_HOST"), port or setting("SEARCH_PORT"),
               say=lambda line: print(line, file=sys.stderr))
