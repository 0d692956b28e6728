"""egmt_ros.nodes"""
