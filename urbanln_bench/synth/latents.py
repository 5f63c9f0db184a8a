"""The latent urban structure of a synthetic twin: one value in [0, 1] per region and latent.

Every image, scene graph, auxiliary modality and indicator of a twin is a function of these
latents (plus seeded noise). Some latents are plainly visible (water, greenery, density), some only
subtly (affluence: car and facade finish; nightlife: neon and signs), and ``deprivation`` is not
rendered at all: indicators that depend on it carry variance no image can explain.
"""

from __future__ import annotations

LATENT_NAMES: tuple[str, ...] = (
    "density",          # built-up intensity: building coverage, people on the street
    "residential",      # land-use share: housing
    "commercial",       # land-use share: shops, offices
    "industrial",       # land-use share: factories, warehouses
    "greenery",         # parks, trees
    "water",            # rivers, lakes, coast
    "road_density",     # road network length per area
    "building_height",  # mean height of buildings
    "affluence",        # income level: only subtly visible
    "nightlife",        # evening activity: only subtly visible (neon, bars)
    "deprivation",      # social deprivation: never rendered
)

# How visible each latent is in the imagery, documented for the twin's README and the fidelity
# reports; the renderers are the ground truth of this table.
VISIBILITY: dict[str, str] = {
    "density": "plain",
    "residential": "plain",
    "commercial": "plain",
    "industrial": "plain",
    "greenery": "plain",
    "water": "plain",
    "road_density": "plain",
    "building_height": "plain (street view); shadows only (satellite)",
    "affluence": "subtle",
    "nightlife": "subtle",
    "deprivation": "invisible",
}
