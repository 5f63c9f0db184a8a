"""The default offline scene-graph parser: caption text → objects, attributes, relations.

CAPTURE (docs/methods.md#capture-metric step 1) parses with FACTUAL, a FLAN-T5 model on a hub; this harness runs offline, so
the default parser is rule-based: a regex tokeniser, a small part-of-speech lexicon with suffix rules
and context rules for noun/verb words ("cars *park* along", "a *park* with trees"), a chunker for
noun phrases, a clause state machine for relations, and a plural lemmatiser. It is built for ordinary
English captions of street scenes and satellite views, is deterministic (ordered lists, never sets)
and needs no data files.

Output conventions (what CAPTURE matching consumes, docs/methods.md#capture-metric step 2):

- objects: head nouns, lower-cased and lemmatised to the singular. A noun compound keeps its last
  two nouns ("office tower", "parking lot"); the lemma applies to its last word.
- attributes: ``(object, attribute)`` tuples from adjective, colour, size, material and participle
  modifiers ("tall glass office towers" → ("office tower", "tall"), ("office tower", "glass")) and
  from predicative adjectives ("the road is narrow"). Numbers and quantifiers are not attributes
  (FACTUAL keeps them apart as quantity, which CAPTURE ignores).
- relations: ``(subject, predicate, object)`` triples from prepositions and verbs, with the
  predicate in its surface form minus auxiliaries ("pedestrians walking along the street" →
  ("pedestrian", "walking along", "street")); coordinated objects share the relation.
- quantity phrases ("a row of trees", "dozens of cars") are read as quantifiers, as FACTUAL does.
- British spellings are mapped to American ones ("neighbourhood" → "neighborhood"), so that the
  CAPTURE stop list, which is American, applies.

The parser is also the refinement pipeline's phrase extractor (docs/methods.md#caption-pipeline stage 4): see
:func:`extract_phrases`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["SceneGraph", "parse_caption", "extract_phrases", "lemmatize_noun", "PARSE_MODES"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- closed classes ----------------------------------------------------------------------------------

_DETERMINERS = _words(
    "a an the this these those some several many few each every its their his her our my your "
    "no any all both either neither another other such much more most various numerous multiple "
    "certain additional further")
_NUMBER_WORDS = _words(
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
    "hundred thousand dozen dozens hundreds thousands half")
_PRONOUNS = _words(
    "it they them he she him her we us you i itself themselves one others someone something "
    "everything nothing anything everyone somebody")
_AUXILIARIES = _words(
    "is are was were be been being am has have had having can could may might will would shall "
    "should must do does did seems seem appear appears appearing remains remain")
_COORDINATORS = _words("and or nor plus")
_SUBORDINATORS = _words(
    "while whereas where when as because but although though if so since until unless yet "
    "whilst whose giving creating making suggesting indicating")
_RELATIVES = _words("that which who whom")
_ADVERBS = _words(
    "very also there here mostly mainly partly partially fairly quite rather slightly somewhat "
    "too almost nearly just still even only not densely sparsely tightly neatly closely heavily "
    "well far away together up down out off back around about approximately roughly largely "
    "predominantly primarily generally typically likely possibly perhaps clearly then now again")
_PREPOSITIONS = _words(
    "on in at along beside besides near behind across over under above below beneath underneath "
    "between among amongst around through throughout into onto upon by with without of from "
    "toward towards against past alongside opposite inside outside within beyond via amid amidst "
    "atop about like for to up down off onto underneath")
# Multi-word prepositions, matched longest first before tagging.
_MULTIWORD_PREPOSITIONS = (
    "in front of", "on top of", "at the top of", "at the bottom of", "on the side of",
    "on either side of", "on both sides of", "along both sides of", "on each side of",
    "in the middle of", "in the center of", "at the edge of", "on the edge of", "at the end of",
    "in the corner of", "on the corner of", "at the corner of", "to the left of", "to the right of",
    "on the left of", "on the right of", "in between", "next to", "adjacent to", "close to",
    "across from", "away from", "out of", "ahead of", "instead of", "because of", "parallel to",
    "on the other side of", "in the distance behind", "up to", "all along", "along with",
)
_MULTIWORD_COORDINATORS = ("as well as", "along with", "such as", "including", "together with")
# A noun that, followed by "of", quantifies the next noun phrase ("a row of trees" → tree).
_QUANTITY_NOUNS = _words(
    "row line group pair couple number variety lot plenty dozen hundred thousand mix mixture "
    "cluster series sea range collection set patch handful crowd network grid bunch pile stack "
    "fleet array assortment host multitude sprinkling scattering majority kind type sort lots "
    "dozens hundreds thousands few part portion section piece strip stretch block cluster "
    "abundance expanse mass number one")

# --- open classes: a small lexicon for what suffix rules get wrong --------------------------------------

_ADJECTIVES = _words(
    # colour
    "red orange yellow green blue purple pink brown black white gray beige tan golden silver dark "
    "light bright pale colorful vibrant vivid muted reddish greenish bluish brownish grayish whitish "
    "yellowish turquoise teal maroon navy cream olive crimson "
    # size and shape
    "big small large tiny huge tall short long wide narrow high low massive giant little vast "
    "enormous compact broad thin thick deep shallow round square rectangular circular curved "
    "straight flat oval triangular linear irregular regular uniform symmetrical "
    # material
    "wooden metal metallic concrete glass brick stone steel iron plastic asphalt dirt gravel "
    "marble tiled paved cobblestone granite timber wood aluminum copper bronze "
    # state and kind
    "busy crowded empty quiet old new modern ancient historic historical traditional dense sparse "
    "clean dirty lush leafy residential commercial industrial urban rural suburban public private "
    "main major minor open closed sunny cloudy overcast clear wet dry snowy rainy foggy hazy "
    "striped ornate elegant beautiful nice pretty lively bustling scenic neat tidy orderly "
    "distinct prominent visible distant nearby adjacent central upper lower outer inner aerial "
    "overhead elevated underground heavy slow fast calm bare rusty shiny glossy reflective "
    "transparent tinted weathered worn cracked broken abandoned vacant young elderly happy casual "
    "warm cool cold hot dim sandy rocky grassy muddy dusty shady hilly steep full complete entire "
    "whole single double triple multi various same different similar individual several "
    "agricultural natural mixed planned organized rich poor safe busy local global modest "
    "simple plain fancy luxurious upscale rundown dilapidated well-maintained maintained "
    "grand tiny medium mid sized multistory highrise lowrise waterfront coastal riverside "
    "bare barren fertile green-roofed red-roofed blue-roofed white-roofed flat-roofed "
    "left right front back top bottom middle rear far near outdoor indoor floral electric "
    "electrical pedestrian-only two-way one-way")
# Materials and colours are attributes when they modify a noun, objects when they head one.
_NOUN_OR_ADJECTIVE = _words(
    "concrete glass brick stone steel iron plastic asphalt dirt gravel marble cobblestone granite "
    "timber wood metal aluminum copper bronze green square light white black red blue gray "
    "left right front back top bottom middle rear public")
_PARTICIPLE_ADJECTIVES = _words("parked paved lined tree-lined")
_ING_NOUNS = _words(
    "building buildings parking crossing crossings housing shopping ceiling painting paintings "
    "clothing railing railings awning awnings sibling wedding morning evening lighting landing "
    "bedding opening openings offing ring rings string king thing things spring springs wing "
    "wings swing swings sing swimming ceiling ceilings dwelling dwellings siding sidings fencing paving "
    "signage marking markings planting plantings gathering gatherings setting settings "
    "walking dining seating tiling roofing flooring")
_NOUN_VERBS = _words(
    "park line cross walk stand sign light house view shade border face top run wait turn rest "
    "cover stretch surround dot fill frame flank overlook lead crowd shop market bank fence stop "
    "ride drive water plant store tower head point pass wind curve bend loop branch snake "
    "cluster pile stack mark display show feature form dominate edge block divide crowd "
    "line hang flow rise cut span border circle ring trail track path cycle bike jog queue board "
    "sprawl dot frame mirror reflect shadow cast gather fill pave house seat roof wall step "
    "stair bridge")
_VERBS = _words(
    "stand sit walk run drive ride park wait cross line cover surround overlook face lead stretch "
    "extend flow wind curve pass border flank dot fill hang grow shade frame connect divide "
    "separate contain include show feature depict appear seem look rise tower loom carry hold "
    "wear use travel move head go come approach turn stop lie rest float fly cast reflect shine "
    "illuminate display sell buy eat talk play navigate occupy dominate enclose intersect meet "
    "join reach span sprawl cluster crowd gather adorn decorate mount attach paint mark label "
    "build construct locate situate position place set load unload pull push cycle jog stroll "
    "wander hurry rush queue board exit enter leave arrive follow bend loop branch snake meander "
    "traverse bisect cut split create make provide offer give add suggest indicate see take "
    "capture watch wave chat shop pedal cruise zip speed merge dart weave bustle hustle idle "
    "stream trickle sit perch lean rest stretch sprawl nestle house accommodate serve line "
    "flank shelter protect support hold keep remain stay host contain fill occupy cover lay "
    "lie sit run stand spread scatter dot pepper punctuate encircle ring circle edge fringe "
    "abut adjoin neighbor overlook dominate tower surround block cross bridge link lead")
_VERBS = _VERBS | _NOUN_VERBS
_IRREGULAR_VERB_FORMS = _words(
    "stood sat ran drove rode went came lay lain laid hung grew flew shone held wore led built "
    "made gave saw took left kept spread set cut split sped seen taken given driven ridden grown "
    "flown shown worn stuck thrown blown drawn fallen risen lit")
_NOT_ADVERBS = _words(
    "family supply assembly lily rally belly jelly ally gully fly butterfly holy ugly lonely "
    "friendly lovely lively early daily elderly hilly curly orderly silly jolly chilly woolly "
    "bully reply italy sicily july anomaly")
# Nouns that the adjective suffix rules would take for adjectives.
_NOT_ADJECTIVES = _words(
    "table cable stable fable gable vegetable timetable constable turntable syllable traffic clinic "
    "mosaic music graphic fabric republic topic picnic panic comic relic logic tunic attic garlic "
    "critic mechanic cleric olive hive drive archive motive detective native executive relative "
    "representative mural memorial material official tutorial potential rental lantern pattern "
    "cavern tavern cistern stern fern concern radish parish finish polish varnish rubbish wish "
    "gazebo cupola skeptic")
_NOT_PLURAL = _words(
    "bus gas grass glass canvas lens species series news physics mathematics economics politics "
    "athletics gymnastics this is was has as us plus thus bonus campus virus status bias atlas "
    "alias christmas chaos cross boss moss dress mattress compass surplus circus octopus cactus "
    "hippopotamus terminus genus sinus focus census corpus radius stimulus nexus apparatus "
    "analysis basis axis oasis crisis thesis emphasis hypothesis synopsis tennis iris metropolis "
    "acropolis trellis chassis marquis debris pelvis mantis parenthesis cannabis hubris ibis "
    "pants jeans trousers shorts scissors stairs glasses binoculars goods "
    "clothes outskirts surroundings premises headquarters barracks crossroads sheep deer fish "
    "aircraft people police cattle")
_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "feet": "foot", "teeth": "tooth",
    "geese": "goose", "mice": "mouse", "leaves": "leaf", "shelves": "shelf", "wolves": "wolf",
    "halves": "half", "knives": "knife", "lives": "life", "wives": "wife", "loaves": "loaf",
    "calves": "calf", "thieves": "thief", "scarves": "scarf", "hooves": "hoof", "elves": "elf",
    "buses": "bus", "gases": "gas", "lenses": "lens", "campuses": "campus", "viruses": "virus",
    "bonuses": "bonus", "circuses": "circus", "tomatoes": "tomato", "potatoes": "potato",
    "heroes": "hero", "volcanoes": "volcano", "echoes": "echo", "cacti": "cactus", "oxen": "ox",
    "movies": "movie", "cookies": "cookie", "ties": "tie", "pies": "pie", "lies": "lie",
    "dice": "die", "indices": "index", "vertices": "vertex", "matrices": "matrix",
    "axes": "axis", "analyses": "analysis", "crises": "crisis", "bases": "base",
    "data": "data", "criteria": "criterion", "phenomena": "phenomenon", "awnings": "awning",
    "zombies": "zombie", "calories": "calorie", "brownies": "brownie", "rookies": "rookie",
    "menus": "menu", "gurus": "guru", "emus": "emu", "tutus": "tutu",
}
_BRITISH_TO_AMERICAN = {
    "neighbourhood": "neighborhood", "neighbour": "neighbor", "colour": "color",
    "colourful": "colorful", "coloured": "colored", "centre": "center", "grey": "gray",
    "greyish": "grayish", "metre": "meter", "theatre": "theater", "harbour": "harbor",
    "kerb": "curb", "tyre": "tire", "storey": "story", "storeys": "stories",
    "aluminium": "aluminum", "jewellery": "jewelry", "pavement": "sidewalk", "lorry": "truck",
    "favourite": "favorite", "organised": "organized", "paralysed": "paralyzed", "gaol": "jail",
}
_SPELLING_SUFFIXES = (("ising", "izing"), ("ised", "ized"))

# --- tokenising -------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"[A-Za-z]+(?:[-'’][A-Za-z]+)*|\d+(?:[.,]\d+)*(?:-[A-Za-z]+)*|[.,;:!?()\[\]\"“”—–]|(?<=\s)-(?=\s)")
_BOUNDARY_PUNCT = frozenset(".;:!?")
_COMMA_PUNCT = frozenset(',()[]"“”—–-')


@dataclass(frozen=True)
class _Token:
    word: str  # lower-cased, spelling-normalised
    surface: str  # as written (for literal phrase spans)
    start: int
    end: int


def _normalise_spelling(word: str) -> str:
    if word in _BRITISH_TO_AMERICAN:
        return _BRITISH_TO_AMERICAN[word]
    if word.endswith("s") and word[:-1] in _BRITISH_TO_AMERICAN:
        return _BRITISH_TO_AMERICAN[word[:-1]] + "s"
    return word


def _tokenise(text: str) -> list[_Token]:
    tokens = []
    for match in _TOKEN.finditer(text):
        surface = match.group()
        word = surface.lower().replace("’", "'")
        start, end = match.start(), match.end()
        if word.endswith("'s") and len(word) > 2:  # possessive: "the city's parks"
            tokens.append(_Token(_normalise_spelling(word[:-2]), surface[:-2], start, end - 2))
            tokens.append(_Token("'s", surface[-2:], end - 2, end))
            continue
        tokens.append(_Token(_normalise_spelling(word), surface, start, end))
    return tokens


# --- lemmatising ------------------------------------------------------------------------------------

def lemmatize_noun(word: str) -> str:
    """Singular of an English noun by rule, standing in for NLTK's WordNet lemmatiser (docs/methods.md#capture-metric step 2).

    Only the last word of a compound is changed ("office towers" → "office tower").
    """
    if " " in word:
        head, _, last = word.rpartition(" ")
        return f"{head} {lemmatize_noun(last)}"
    if "-" in word and not word.endswith("-"):
        head, _, last = word.rpartition("-")
        return f"{head}-{lemmatize_noun(last)}"
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if len(word) <= 3 or word in _NOT_PLURAL or not word.endswith("s"):
        if word.endswith("men") and word not in ("omen", "specimen", "abdomen", "stamen", "ramen"):
            return word[:-3] + "man"
        return word
    if word.endswith(("ss", "us", "ous", "'s")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zzes", "sses")):
        return word[:-2]
    if word.endswith("oes") and len(word) > 5:
        return word[:-2] if word[:-3].endswith(("at", "an", "er", "ch", "rg")) else word[:-1]
    return word[:-1]


def _is_plural(word: str) -> bool:
    return lemmatize_noun(word) != word or word in ("people", "police", "cattle")


# --- tagging ------------------------------------------------------------------------------------------

# Tags: D determiner, Q number, A adjective, N noun, V verb, X auxiliary, P preposition,
# C coordinator, S subordinator (clause boundary), R relative pronoun, O pronoun, B adverb,
# E existential "there", T infinitive "to", K comma, Z sentence boundary, G possessive "'s".

def _verb_base(word: str) -> str | None:
    """The base form if `word` is an inflection of a lexicon verb, else None."""
    if word in _VERBS:
        return word
    candidates = []
    if word.endswith("ing"):
        stem = word[:-3]
        candidates += [stem, stem + "e"]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            candidates.append(stem[:-1])
    elif word.endswith("ed"):
        stem = word[:-2]
        candidates += [stem, word[:-1]]
        if len(stem) > 2 and stem[-1] == stem[-2]:
            candidates.append(stem[:-1])
        if stem.endswith("i"):
            candidates.append(stem[:-1] + "y")
    elif word.endswith("s"):
        candidates += [word[:-1], word[:-2]]
        if word.endswith("ies"):
            candidates.append(word[:-3] + "y")
    for candidate in candidates:
        if candidate in _VERBS:
            return candidate
    return None


def _lexical_tags(word: str) -> frozenset[str]:
    """Every tag a word can take out of context."""
    if word == "'s":
        return frozenset("G")
    if word in _BOUNDARY_PUNCT:
        return frozenset("Z")
    if word in _COMMA_PUNCT:
        return frozenset("K")
    if word[0].isdigit() or word in _NUMBER_WORDS:
        return frozenset("Q") if not word[-1].isalpha() or word in _NUMBER_WORDS else frozenset("A")
    if word == "there":
        return frozenset("E")
    if word == "to":
        return frozenset("PT")
    if word == "that":
        return frozenset("DR")
    if word in _DETERMINERS:
        return frozenset("D")
    if word in _AUXILIARIES:
        return frozenset("X")
    if word in _COORDINATORS:
        return frozenset("C")
    if word in _RELATIVES:
        return frozenset("R")
    if word in _SUBORDINATORS:
        return frozenset("S")
    if word in _PREPOSITIONS:
        return frozenset("P")
    if word in _PRONOUNS:
        return frozenset("O")
    if word in _ADVERBS:
        return frozenset("B")
    tags: set[str] = set()
    if word in _NOUN_OR_ADJECTIVE:
        tags |= {"A", "N"}
    elif word in _ADJECTIVES or word in _PARTICIPLE_ADJECTIVES:
        tags.add("A")
    if word in _ING_NOUNS:
        tags.add("N")
    base = _verb_base(word)
    if base is not None or word in _IRREGULAR_VERB_FORMS:
        tags.add("V")
        if word.endswith(("ing", "ed")) or word in _IRREGULAR_VERB_FORMS:
            tags.add("A")  # participles modify nouns: "parked cars", "a winding road"
        if base in _NOUN_VERBS and not word.endswith(("ing", "ed")):
            tags.add("N")
    if tags:
        if word in _ING_NOUNS:
            tags.discard("A")
        return frozenset(tags)
    # Unknown word: suffix rules, else noun.
    if "-" in word:
        last = word.rsplit("-", 1)[1]
        if last.endswith(("ed", "ing", "ful", "ous", "ic", "al", "ive", "less", "like", "story",
                          "storey", "lane", "level", "sized", "style", "colored")):
            return frozenset("A")
        return frozenset("AN")  # "high-rise buildings" / "the high-rises"
    if word.endswith("ly") and word not in _NOT_ADVERBS:
        return frozenset("B")
    if word.endswith(("ous", "ful", "ive", "ic", "ical", "able", "ible", "less", "ish", "ial",
                      "ural", "onal", "ntal", "esque", "ern")) and len(word) > 4 and word not in _NOT_ADJECTIVES:
        return frozenset("A")
    if word.endswith(("ing", "ed")) and len(word) > 5:
        return frozenset("VA")
    return frozenset("N")


_NOMINAL_LEFT = frozenset("DQAG")  # after these a noun/verb word is a noun: "a park", "two lines"


def _disambiguate(words: list[str], options: list[frozenset[str]]) -> list[str]:
    """One tag per token from context (left to right, with one token of lookahead)."""
    tags: list[str] = []
    count = len(words)
    for i, opts in enumerate(options):
        if len(opts) == 1:
            tags.append(next(iter(opts)))
            continue
        prev = tags[-1] if tags else "Z"
        nxt = options[i + 1] if i + 1 < count else frozenset("Z")
        word = words[i]
        next_nominal = bool(nxt & {"N", "A"}) and not nxt <= {"V", "A"} or nxt == frozenset("AN")
        if opts == frozenset("DR"):  # "that": a relative pronoun before a verb, else a determiner
            tags.append("R" if nxt & {"V", "X", "B"} and not next_nominal or nxt == frozenset("V") else "D")
            continue
        if opts == frozenset("PT"):
            tags.append("T" if "V" in nxt and "N" not in nxt and prev != "D" else "P")
            continue
        if "N" in opts and "V" in opts:
            tags.append(_noun_or_verb(word, prev, words[i - 1] if i else "", nxt, next_nominal))
            continue
        if "A" in opts and "V" in opts:  # participles
            if prev in _NOMINAL_LEFT | {"Z", "K", "C", "P", "S", "B"} and next_nominal:
                tags.append("A")
            elif prev == "X" and not (nxt & {"P", "D", "T"}) and not word.endswith("ing"):
                tags.append("A")  # "the road is paved"
            else:
                tags.append("V")
            continue
        if "A" in opts and "N" in opts:
            tags.append("A" if next_nominal or "A" in nxt or prev == "X" or (prev in "BK" and tags and "X" in tags[-3:])
                        else "N")
            continue
        tags.append(sorted(opts)[0])
    return tags


def _noun_or_verb(word: str, prev: str, prev_word: str, nxt: frozenset[str], next_nominal: bool) -> str:
    if prev in _NOMINAL_LEFT or prev == "P":
        return "N"
    if prev in ("X", "T"):
        return "V"  # "is parked", "to cross"
    if prev in ("N", "O", "R"):
        if "V" in nxt and "N" in nxt and nxt != frozenset("AN"):
            return "N"  # "street lights line ...": the next word is the verb
        if word.endswith(("ing", "ed")):
            return "V"
        if prev in ("O", "R"):
            return "V"
        # Agreement: "cars park", "the road winds"; a singular noun before a base form makes a
        # compound ("bus stop"), and so does one before a plural that ends the phrase ("office towers").
        if _is_plural(prev_word):
            return "V" if nxt & {"D", "P", "Z", "K", "B", "A", "Q", "C", "S", "O"} else "N"
        third_person = word.endswith("s") and not word.endswith("ss")
        return "V" if third_person and nxt & {"D", "P", "B", "A", "Q", "O"} else "N"
    if prev in ("Z", "K", "C", "S", "E", "B"):
        return "N" if next_nominal or nxt & {"P", "Z", "K", "C", "X", "V"} else "V"
    return "N"


# --- scene graph ----------------------------------------------------------------------------------------

@dataclass
class SceneGraph:
    """A caption's objects, attributes and relations, each an ordered list without repeats."""

    objects: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str]] = field(default_factory=list)  # (object, attribute)
    relations: list[tuple[str, str, str]] = field(default_factory=list)  # (subject, predicate, object)

    def _add(self, bucket: list, item) -> None:
        if item not in bucket:
            bucket.append(item)


@dataclass
class _NounPhrase:
    head: str  # lemmatised object
    modifiers: list[str]  # attribute words
    start: int  # char span of the literal phrase (modifiers + head, no determiners)
    head_start: int
    end: int


def _merge_multiword(tokens: list[_Token]) -> list[_Token]:
    """Join multi-word prepositions and coordinators into single tokens ("in front of")."""
    out: list[_Token] = []
    i = 0
    words = [t.word for t in tokens]
    while i < len(tokens):
        for phrase in _MULTIWORD_LOOKUP.get(words[i], ()):
            n = len(phrase)
            if tuple(words[i:i + n]) == phrase:
                out.append(_Token(" ".join(phrase), " ".join(t.surface for t in tokens[i:i + n]),
                                  tokens[i].start, tokens[i + n - 1].end))
                i += n
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


_MULTIWORD_LOOKUP: dict[str, list[tuple[str, ...]]] = {}
for _phrase in sorted(_MULTIWORD_PREPOSITIONS + _MULTIWORD_COORDINATORS, key=lambda p: -len(p.split())):
    _parts = tuple(_phrase.split())
    if len(_parts) > 1:
        _MULTIWORD_LOOKUP.setdefault(_parts[0], []).append(_parts)
_MULTIWORD_TAGS = {p: "P" for p in _MULTIWORD_PREPOSITIONS} | {p: "C" for p in _MULTIWORD_COORDINATORS}


def _tag(text: str) -> tuple[list[_Token], list[str]]:
    tokens = _merge_multiword(_tokenise(text))
    words = [t.word for t in tokens]
    options = [frozenset(_MULTIWORD_TAGS[w]) if w in _MULTIWORD_TAGS else _lexical_tags(w) for w in words]
    return tokens, _disambiguate(words, options)


def _chunk(tokens: list[_Token], tags: list[str],
           quantity_nouns: frozenset[str] = _QUANTITY_NOUNS) -> list[tuple[str, object]]:
    """Group tagged tokens into items: ("NP", _NounPhrase), ("V", words), ("P", words), or a bare tag."""
    items: list[tuple[str, object]] = []
    i, count = 0, len(tokens)
    while i < count:
        tag = tags[i]
        if tag in "DQAN":
            j = i
            while j < count and tags[j] in "DQAN":
                j += 1
            # A determiner or number after a noun starts a new phrase ("trees the" does not occur).
            k = i
            while k < j:
                end = k + 1
                while end < j and not (tags[end] in "DQ" and tags[end - 1] in "N"):
                    end += 1
                phrase = _noun_phrase(tokens[k:end], tags[k:end])
                if phrase is None:  # no noun: predicative adjectives ("is tall") or a bare number
                    items.extend((tags[m] if tags[m] in "AQ" else "Q", tokens[m].word) for m in range(k, end))
                else:
                    items.append(("NP", phrase))
                k = end
            i = j
        elif tag == "V":
            j = i
            while j < count and tags[j] == "V":
                j += 1
            items.append(("V", " ".join(t.word for t in tokens[i:j])))
            i = j
        elif tag == "P":
            items.append(("P", tokens[i].word))
            i += 1
        else:
            items.append((tag, tokens[i].word))
            i += 1
    # Quantity phrases: "a row of trees" → the row is dropped and "of" with it.
    merged: list[tuple[str, object]] = []
    for index, item in enumerate(items):
        if (item[0] == "P" and item[1] == "of" and merged and index + 1 < len(items)
                and items[index + 1][0] == "NP"):
            previous = merged[-1]
            if previous[0] == "Q" or (previous[0] == "NP" and previous[1].head in quantity_nouns):
                merged.pop()
                continue
        merged.append(item)
    return merged


def _noun_phrase(tokens: list[_Token], tags: list[str]) -> _NounPhrase | None:
    """Head = last noun; the noun before it joins a compound; adjectives become attributes."""
    nouns = [i for i, t in enumerate(tags) if t == "N"]
    if not nouns:
        return None
    head_index = nouns[-1]
    compound_start = head_index
    if head_index - 1 >= 0 and tags[head_index - 1] == "N" and tokens[head_index - 1].word not in _NOUN_OR_ADJECTIVE:
        compound_start = head_index - 1
    head_words = [t.word for t in tokens[compound_start:head_index + 1]]
    head = lemmatize_noun(" ".join(head_words))
    modifiers = []
    first_modifier = None
    for i in range(compound_start):
        if tags[i] in "AN" and tokens[i].word not in _DETERMINERS:
            if first_modifier is None:
                first_modifier = i
            modifiers.append(tokens[i].word)
    start = tokens[first_modifier if first_modifier is not None else compound_start].start
    return _NounPhrase(head, modifiers, start, tokens[compound_start].start, tokens[head_index].end)


def _verb_ahead(items: list[tuple[str, object]], start: int) -> bool:
    """Whether a verb follows before the next comma or boundary: ", and a cyclist in a jacket rides"."""
    for kind, _ in items[start:]:
        if kind in ("V", "X"):
            return True
        if kind in ("K", "C", "Z", "S", "R"):
            return False
    return False


def _clause_relations(items: list[tuple[str, object]], graph: SceneGraph, dropped: frozenset[int] = frozenset()) -> None:
    """Walk the items once, keeping a clause subject, the last noun phrase and a pending predicate.

    Noun phrases at the item indexes in `dropped` (real-prose mode) add no object, attribute or
    relation, and relations waiting for them are abandoned.
    """
    subject: str | None = None
    last: str | None = None
    pending: tuple[str | None, str] | None = None  # (anchor, predicate) waiting for its object
    shared: tuple[str, str] | None = None  # the last relation's (anchor, predicate), for coordination
    coordinating = False
    after_relative = False
    after_auxiliary = False
    previous_kind = "Z"
    for index, (kind, value) in enumerate(items):
        next_kind = items[index + 1][0] if index + 1 < len(items) else "Z"
        if kind == "NP" and index in dropped:
            colour: _NounPhrase = value  # type: ignore[assignment]
            anchor = subject if subject is not None else last
            if after_auxiliary and anchor is not None and all(w in _COLOURS for w in colour.head.split()):
                # "the sky is a clear blue": the colour describes the subject (real-prose mode only)
                for word in (*colour.modifiers, *colour.head.split()):
                    graph._add(graph.attributes, (anchor, word))
            pending = shared = last = None
            coordinating = after_relative = after_auxiliary = False
        elif kind == "NP":
            phrase: _NounPhrase = value  # type: ignore[assignment]
            head = phrase.head
            graph._add(graph.objects, head)
            for modifier in phrase.modifiers:
                graph._add(graph.attributes, (head, modifier))
            starts_clause = coordinating and _verb_ahead(items, index + 1)
            if pending is not None and pending[0] is not None:
                graph._add(graph.relations, (pending[0], pending[1], head))
                shared = (pending[0], pending[1])
            elif pending is not None:
                pass  # object of a fronted preposition ("In the distance, ..."): not the subject
            elif coordinating and shared is not None and not starts_clause:
                graph._add(graph.relations, (shared[0], shared[1], head))
            elif subject is None or starts_clause:
                subject = head
                shared = None
            pending = None
            coordinating = False
            after_relative = False
            after_auxiliary = False
            last = head
        elif kind == "V":
            participle = str(value).split()[0].endswith(("ing", "ed")) or value in _IRREGULAR_VERB_FORMS
            if after_relative or (participle and previous_kind in ("NP", "K") and not after_auxiliary):
                anchor = last
            else:
                anchor = subject if subject is not None else last
            if pending is not None and previous_kind == "V":
                pending = (pending[0], f"{pending[1]} {value}")
            else:
                pending = (anchor, str(value))
            shared = None
            coordinating = False
            after_relative = False
        elif kind == "P":
            if pending is not None and previous_kind in ("V", "B", "P"):
                pending = (pending[0], f"{pending[1]} {value}")
            else:
                pending = (last, str(value))
            coordinating = False
        elif kind == "A":  # predicative adjective: "the road is narrow and winding"
            anchor = last if after_relative else (subject if subject is not None else last)
            if after_auxiliary and anchor is not None:
                graph._add(graph.attributes, (anchor, str(value)))
        elif kind == "X":
            after_auxiliary = True
            if previous_kind == "R":
                after_relative = True
        elif kind == "R":
            after_relative = True
        elif kind in ("C", "K"):
            coordinating = shared is not None or coordinating
            if kind == "C" and after_auxiliary and next_kind == "A":
                previous_kind = "X"
                continue
            if pending is not None and pending[0] is not None and previous_kind in ("V", "P"):
                pending = None
        elif kind in ("S", "Z"):
            subject = last = pending = shared = None
            coordinating = after_relative = after_auxiliary = False
        elif kind == "G":  # possessive: the owner phrase ends; its owned noun starts fresh
            pending = None
        previous_kind = kind


ParseMode = Literal["original", "real-prose"]
PARSE_MODES: tuple[str, ...] = ("original", "real-prose")


def parse_caption(text: str, mode: ParseMode = "original") -> SceneGraph:
    """Objects, attributes and relations of an English caption (module docstring has the conventions).

    ``mode="real-prose"`` adds what real MLLM paragraphs need (docs/methods.md#capture-metric, "urban
    variant"): negated things are dropped ("despite the absence of people", "devoid of any clouds",
    "does not contain any text"), so are capitalised names inside a sentence ("Beijing, China"),
    colour words read as objects ("the sky is a clear blue"), the owner in camera talk ("a bird's eye
    view", "a driver's perspective"), and more nouns only measure the next phrase ("a touch of green",
    "a body of water"). The default ``"original"`` is what CAPTURE and the committed caption sets use.
    """
    if mode not in PARSE_MODES:
        raise ValueError(f"parse mode must be one of {', '.join(PARSE_MODES)}, got {mode!r}")
    graph = SceneGraph()
    tokens, tags = _tag(text)
    if mode == "original":
        _clause_relations(_chunk(tokens, tags), graph)
        return graph
    from urbanln_bench.captions.lexicon import urban_lexicon

    items = _chunk(tokens, tags, _QUANTITY_NOUNS | urban_lexicon().quantity_nouns)
    _clause_relations(items, graph, _real_prose_drops(text, tokens, tags, items))
    return graph


# --- real prose (mode="real-prose") ---------------------------------------------------------------------

_NEGATION_CUES = _words("without no devoid absence absent lack lacking lacks nor")
_NEGATION_AFTER_NOT = _words("any a an")  # "does not contain any text", "is not a street"
_NEGATION_ENDS = frozenset("KZSVXR")  # a comma, a sentence end, a clause, a verb or a relative ends the scope
_COLOURS = _words(
    "red orange yellow green blue purple pink brown black white gray beige tan golden silver turquoise "
    "teal maroon navy cream olive crimson violet indigo magenta cyan")
_CAMERA_HEADS = _words("view perspective viewpoint vantage eye angle point shot")


def _negated_tokens(tokens: list[_Token], tags: list[str]) -> set[int]:
    """Token indexes inside a negation's scope: from the cue to the next comma, clause or verb."""
    negated: set[int] = set()
    count = len(tokens)
    for i, token in enumerate(tokens):
        cue = token.word in _NEGATION_CUES
        if token.word in ("not", "n't", "never"):
            ahead = [tokens[k].word for k in range(i + 1, min(count, i + 4))]
            cue = any(w in _NEGATION_AFTER_NOT for w in ahead)
        if not cue:
            continue
        k = i + 1
        while k < count and (tags[k] not in _NEGATION_ENDS or tokens[k].word in ("not", "n't", "contain", "contains",
                                                                                   "include", "includes", "show", "shows")):
            negated.add(k)
            k += 1
    return negated


def _real_prose_drops(text: str, tokens: list[_Token], tags: list[str], items: list[tuple[str, object]]) -> frozenset[int]:
    """Item indexes of noun phrases that name nothing in the picture (see :func:`parse_caption`)."""
    negated_starts = {tokens[i].start for i in _negated_tokens(tokens, tags)}
    dropped = set()
    for index, (kind, value) in enumerate(items):
        if kind != "NP":
            continue
        phrase: _NounPhrase = value  # type: ignore[assignment]
        before = text[:phrase.head_start].rstrip()
        sentence_start = not before or before[-1] in ".!?:;\n\"“"
        words = phrase.head.split()
        owner_of_camera_talk = (index + 2 < len(items) and items[index + 1][0] == "G" and items[index + 2][0] == "NP"
                                and items[index + 2][1].head.split()[0] in _CAMERA_HEADS)  # type: ignore[union-attr]
        if (phrase.head_start in negated_starts
                or (text[phrase.head_start].isupper() and not sentence_start)
                or all(w in _COLOURS for w in words)
                or owner_of_camera_talk):
            dropped.add(index)
    return frozenset(dropped)


def extract_phrases(text: str) -> list[str]:
    """Literal noun phrases in text order: "adj noun" spans where a noun has modifiers, else the bare head.

    For the refinement pipeline's hallucination filter (docs/methods.md#caption-pipeline stage 4), whose queries are the
    literal "adj noun" spans and the remaining bare heads. Phrases are surface text (plural kept,
    determiners and numbers dropped), so each occurs literally in `text` and can be deleted from it.
    Repeats are dropped, keeping the first.
    """
    tokens, tags = _tag(text)
    phrases: list[str] = []
    for kind, value in _chunk(tokens, tags):
        if kind != "NP":
            continue
        phrase: _NounPhrase = value  # type: ignore[assignment]
        span = text[phrase.start:phrase.end]
        if span not in phrases:
            phrases.append(span)
    return phrases
