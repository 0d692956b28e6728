"""egmt_ros.cli"""
