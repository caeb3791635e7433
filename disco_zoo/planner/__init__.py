"""EdgeFlow: device profiles, execution units, LP partitioning, plan replay (disco_zoo.timing), baselines."""
from disco_zoo.planner.lp import PlanStats
from disco_zoo.planner.search import plan_edgeflow
from disco_zoo.planner.profiles import Device, Profile, load_profile, profile_from_dict
from disco_zoo.planner.simulate import Simulation, simulate
from disco_zoo.planner.units import Placement, Unit, build_units

__all__ = ["Device", "PlanStats", "Placement", "Profile", "Simulation", "Unit", "build_units",
           "load_profile", "plan_edgeflow", "profile_from_dict", "simulate"]
