"""The shared CLIP trainer and its loss plugins (docs/methods.md): InfoNCE, UrbanLN's MSD, ..."""
