from .official import config_from_official_yaml, convert_official_checkpoint, load_official_state_dict

__all__ = ["config_from_official_yaml", "convert_official_checkpoint", "load_official_state_dict"]
